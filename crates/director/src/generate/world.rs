//! Reading a prompt in the synthetic world's language ("a red star in the top left and a blue
//! circle below it on a yellow background") into the scene it asks for and what it pins down,
//! so that the loop can check a picture against the prompt with the world's scene checker.
//!
//! The reader is tolerant of word order, articles, synonyms, sizes, counts and lighting words,
//! but strict about content: a prompt with any word outside the world's vocabulary is not a
//! world prompt (None), so that the checker is never applied to a picture it cannot judge.

use plantain_world::caption::{position_phrases, relation_phrases};
use plantain_world::{Background, ColorName, HPos, LightDir, Lighting, Object, Relation, Scene, Shape, Size, Stated, VPos};

/// A prompt read as a scene of the synthetic world.
#[derive(Clone, Debug, PartialEq)]
pub struct WorldPrompt {
    /// The scene asked for; objects whose place the prompt does not give sit in cells that
    /// satisfy the relations it states.
    pub scene: Scene,
    /// What the prompt pins down (absolute positions, stated relations).
    pub stated: Stated,
}

/// Words that carry no content of their own.
const FILLER: &[&str] = &["a", "an", "one", "the", "and", ",", ":", ";", "with", "shapes", "objects", "two", "three", "2", "3", "plain"];

#[derive(Clone, Copy, Debug)]
struct Mention {
    /// Index into the objects.
    object: usize,
    start: usize,
    end: usize,
}

struct Reader {
    tokens: Vec<String>,
    used: Vec<bool>,
}

/// Reads `prompt` as a world scene, or None when it says anything the world cannot show.
pub fn read_world_prompt(prompt: &str) -> Option<WorldPrompt> {
    let mut r = Reader::new(prompt);
    let background = r.background()?;
    let lighting = r.lighting();
    let (mut objects, mentions) = r.objects()?;
    let cells = r.positions(&mentions, objects.len());
    let relations = r.relations(&mentions);
    r.count(objects.len())?;
    if !r.all_used() || objects.is_empty() || objects.len() > 3 {
        return None;
    }
    let placed = place(&cells, &relations)?;
    for (o, &(h, v)) in objects.iter_mut().zip(&placed) {
        (o.h, o.v) = (h, v);
    }
    let all = Scene::relations_from_cells(&objects);
    let stated_relations = relations.iter().map(|&(a, rel, b)| relation_index(&all, a, rel, b)).collect::<Option<Vec<_>>>()?;
    let mut stated_relations = stated_relations;
    stated_relations.sort_unstable();
    stated_relations.dedup();
    let stated = Stated { absolute: cells.iter().map(Option::is_some).collect(), relations: stated_relations };
    Some(WorldPrompt { scene: Scene { background, lighting, objects, relations: all }, stated })
}

impl Reader {
    fn new(prompt: &str) -> Reader {
        let spaced: String =
            prompt.to_lowercase().chars().flat_map(|c| if ",:;".contains(c) { vec![' ', c, ' '] } else { vec![c] }).collect();
        let tokens: Vec<String> = spaced
            .split_whitespace()
            .map(|t| t.trim_matches(|c: char| c == '.' || c == '!' || c == '"').to_string())
            .filter(|t| !t.is_empty())
            .collect();
        let used = vec![false; tokens.len()];
        Reader { tokens, used }
    }

    fn word(&self, i: usize) -> Option<&str> {
        self.tokens.get(i).map(String::as_str)
    }

    fn color_at(&self, i: usize) -> Option<ColorName> {
        let w = self.word(i)?;
        ColorName::ALL.into_iter().find(|c| c.all_words().any(|x| x == w))
    }

    fn size_at(&self, i: usize) -> Option<Size> {
        let w = self.word(i)?;
        Size::ALL.into_iter().find(|s| s.word() == w || s.synonyms().contains(&w))
    }

    /// Whether the words from `i` are `phrase` (space-separated).
    fn matches(&self, i: usize, phrase: &str) -> Option<usize> {
        let words: Vec<&str> = phrase.split(' ').collect();
        let hit = words.iter().enumerate().all(|(k, w)| self.word(i + k) == Some(w) && !self.used[i + k]);
        hit.then_some(words.len())
    }

    fn take(&mut self, from: usize, len: usize) {
        for u in &mut self.used[from..from + len] {
            *u = true;
        }
    }

    /// Every word is either part of something read or a filler word.
    fn all_used(&self) -> bool {
        self.used.iter().zip(&self.tokens).all(|(&u, t)| u || FILLER.contains(&t.as_str()))
    }

    /// "on a red background", "against a red backdrop", "red sky above green ground", "on red".
    fn background(&mut self) -> Option<Background> {
        let find = |r: &Reader, noun: &str| r.tokens.iter().position(|t| t == noun).filter(|&i| i > 0);
        if let (Some(s), Some(g)) = (find(self, "sky"), find(self, "ground")) {
            let (sky, ground) = (self.color_at(s - 1)?, self.color_at(g - 1)?);
            self.take(s - 1, 2);
            self.take(g - 1, 2);
            self.take_preposition(s - 1);
            // "sky above green ground", "sky over ...", "sky and ...".
            if let Some(w) = self.word(s + 1)
                && ["above", "over"].contains(&w)
            {
                self.take(s + 1, 1);
            }
            return Some(Background::Split { sky, ground });
        }
        if let Some(i) = self.tokens.iter().position(|t| t == "background" || t == "backdrop").filter(|&i| i > 0) {
            let c = self.color_at(i - 1)?;
            self.take(i - 1, 2);
            self.take_preposition(i - 1);
            return Some(Background::Solid(c));
        }
        // "... on red": the last "on" followed by a colour and then nothing or a comma.
        let i = (0..self.tokens.len()).rev().find(|&i| self.word(i) == Some("on") && self.color_at(i + 1).is_some())?;
        if self.word(i + 2).is_some_and(|w| w != "," && w != ";") {
            return None;
        }
        let c = self.color_at(i + 1)?;
        self.take(i, 2);
        Some(Background::Solid(c))
    }

    /// The preposition before a background phrase starting at `at` (after an article or
    /// "plain"): "on", "against", "under", "with", "in front of".
    fn take_preposition(&mut self, at: usize) {
        let mut i = at;
        while i > 0 && matches!(self.word(i - 1), Some("a") | Some("an") | Some("plain")) {
            i -= 1;
        }
        if i >= 3 && self.matches(i - 3, "in front of").is_some() {
            self.take(i - 3, 3);
        } else if i >= 1 && matches!(self.word(i - 1), Some("on") | Some("against") | Some("under") | Some("with")) {
            self.take(i - 1, 1);
        }
    }

    /// "warm light from the left", "lit from above", "cool light": consumed (the checker does
    /// not judge lighting; the plan keeps it).
    fn lighting(&mut self) -> Lighting {
        let mut lighting = Lighting::NEUTRAL;
        for i in 0..self.tokens.len() {
            let warmth = match self.word(i) {
                Some("warm") => Some(0.6),
                Some("cool") | Some("cold") => Some(-0.6),
                _ => None,
            };
            if let Some(w) = warmth
                && self.word(i + 1) == Some("light")
            {
                lighting.warmth = w;
                self.take(i, 2);
                if self.word(i - 1) == Some("soft") && i > 0 {
                    self.take(i - 1, 1);
                }
            }
        }
        for i in 0..self.tokens.len() {
            let dir = if let Some(n) = self.matches(i, "from the left") {
                Some((LightDir::Left, n))
            } else if let Some(n) = self.matches(i, "from the right") {
                Some((LightDir::Right, n))
            } else {
                self.matches(i, "from above").map(|n| (LightDir::Top, n))
            };
            if let Some((d, n)) = dir {
                lighting.direction = Some(d);
                self.take(i, n);
                if i > 0 && matches!(self.word(i - 1), Some("lit") | Some("light")) && !self.used[i - 1] {
                    self.take(i - 1, 1);
                }
            }
        }
        lighting
    }

    /// The objects in order of first mention, and every mention ("the blue circle" again
    /// refers to the object already introduced).
    fn objects(&mut self) -> Option<(Vec<Object>, Vec<Mention>)> {
        let mut objects: Vec<Object> = Vec::new();
        let mut mentions = Vec::new();
        let mut i = 0;
        while i < self.tokens.len() {
            let Some((shape, len)) = self.shape_at(i) else {
                i += 1;
                continue;
            };
            self.take(i, len);
            let (mut start, mut end) = (i, i + len);
            let color = if let Some(c) = self.color_at(i.wrapping_sub(1)).filter(|_| i > 0 && !self.used[i - 1]) {
                self.take(i - 1, 1);
                start = i - 1;
                c
            } else if self.word(end) == Some("in") && self.color_at(end + 1).is_some() {
                let c = self.color_at(end + 1)?;
                self.take(end, 2);
                end += 2;
                c
            } else {
                return None;
            };
            let mut size = None;
            if start > 0
                && let Some(s) = self.size_at(start - 1)
            {
                self.take(start - 1, 1);
                start -= 1;
                size = Some(s);
            }
            let definite = start > 0 && self.word(start - 1) == Some("the");
            let existing = objects.iter().position(|o| o.color == color && o.shape == shape);
            let object = match (definite, existing) {
                (true, Some(k)) => k,
                (true, None) => return None,
                (false, _) => {
                    let size = size.unwrap_or(Size::Medium);
                    objects.push(Object { shape, color, size, h: HPos::Center, v: VPos::Middle, jitter: (0.0, 0.0) });
                    objects.len() - 1
                }
            };
            mentions.push(Mention { object, start, end });
            i = end;
        }
        Some((objects, mentions))
    }

    /// The longest shape phrase at `i`.
    fn shape_at(&self, i: usize) -> Option<(Shape, usize)> {
        Shape::ALL
            .into_iter()
            .flat_map(|s| s.all_words().map(move |w| (s, w)))
            .filter_map(|(s, w)| self.matches(i, w).map(|n| (s, n)))
            .max_by_key(|&(_, n)| n)
    }

    /// Absolute positions: a position phrase belongs to the mention before it (or, when it opens
    /// the prompt, the one after it). Phrases followed by "of" are relations, not places.
    fn positions(&mut self, mentions: &[Mention], n: usize) -> Vec<Option<(HPos, VPos)>> {
        let mut cells = vec![None; n];
        let mut phrases: Vec<(String, (HPos, VPos))> = Vec::new();
        for h in HPos::ALL {
            for v in [VPos::Top, VPos::Middle, VPos::Bottom] {
                phrases.extend(position_phrases(h, v).iter().map(|p| (p.to_string(), (h, v))));
            }
        }
        phrases.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let mut i = 0;
        while i < self.tokens.len() {
            let hit = phrases.iter().find_map(|(p, cell)| self.matches(i, p).map(|len| (len, *cell)));
            let Some((len, cell)) = hit.filter(|&(len, _)| self.word(i + len) != Some("of")) else {
                i += 1;
                continue;
            };
            let owner = mentions.iter().rev().find(|m| m.end <= i).or_else(|| mentions.iter().find(|m| m.start >= i + len));
            if let Some(m) = owner {
                cells[m.object] = Some(cell);
                self.take(i, len);
            }
            i += len;
        }
        cells
    }

    /// Relations stated between consecutive mentions ("a red star above and to the left of a
    /// blue circle"): `(a, relation, b)` in object indices.
    fn relations(&mut self, mentions: &[Mention]) -> Vec<(usize, Relation, usize)> {
        let mut phrases: Vec<(&str, Relation)> = Vec::new();
        for r in [Relation::LeftOf, Relation::RightOf, Relation::Above, Relation::Below] {
            phrases.extend(relation_phrases(r).iter().map(|p| (*p, r)));
            // The first of two combined relations drops its "of": "above and to the left of".
            phrases.extend(relation_phrases(r).iter().filter_map(|p| p.strip_suffix(" of")).map(|p| (p, r)));
        }
        phrases.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let mut out = Vec::new();
        for pair in mentions.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let mut i = a.end;
            while i < b.start {
                match phrases.iter().find_map(|(p, r)| self.matches(i, p).map(|len| (len, *r))) {
                    Some((len, r)) => {
                        self.take(i, len);
                        out.push((a.object, r, b.object));
                        i += len;
                    }
                    None => i += 1,
                }
            }
        }
        out
    }

    /// "two shapes:" must agree with the objects.
    fn count(&self, n: usize) -> Option<()> {
        let said = self.tokens.iter().enumerate().find_map(|(i, t)| {
            let next = self.word(i + 1);
            let counted = next.is_some_and(|w| w == "shapes" || w == "objects");
            match t.as_str() {
                "two" | "2" if counted => Some(2),
                "three" | "3" if counted => Some(3),
                _ => None,
            }
        });
        (said.is_none_or(|k| k == n)).then_some(())
    }
}

/// Cells for every object: the stated ones, and for the others the first cells (in reading
/// order) that keep every object in its own cell and satisfy the stated relations.
fn place(cells: &[Option<(HPos, VPos)>], relations: &[(usize, Relation, usize)]) -> Option<Vec<(HPos, VPos)>> {
    let all: Vec<(HPos, VPos)> = [VPos::Middle, VPos::Top, VPos::Bottom]
        .into_iter()
        .flat_map(|v| [HPos::Center, HPos::Left, HPos::Right].into_iter().map(move |h| (h, v)))
        .collect();
    let mut chosen = vec![(HPos::Center, VPos::Middle); cells.len()];
    fn go(
        k: usize,
        cells: &[Option<(HPos, VPos)>],
        all: &[(HPos, VPos)],
        rel: &[(usize, Relation, usize)],
        chosen: &mut Vec<(HPos, VPos)>,
    ) -> bool {
        if k == cells.len() {
            let distinct = (0..k).all(|i| (i + 1..k).all(|j| chosen[i] != chosen[j]));
            return distinct && rel.iter().all(|&(a, r, b)| r.holds(chosen[a], chosen[b]));
        }
        let options: Vec<(HPos, VPos)> = match cells[k] {
            Some(c) => vec![c],
            None => all.to_vec(),
        };
        for c in options {
            chosen[k] = c;
            if go(k + 1, cells, all, rel, chosen) {
                return true;
            }
        }
        false
    }
    go(0, cells, &all, relations, &mut chosen).then_some(chosen)
}

/// The index in `all` of the fact `a r b`, as [`Scene::relations`] stores it (`a < b`).
fn relation_index(all: &[(usize, Relation, usize)], a: usize, r: Relation, b: usize) -> Option<usize> {
    let fact = if a < b { (a, r, b) } else { (b, r.inverse(), a) };
    all.iter().position(|&x| x == fact)
}

#[cfg(test)]
mod tests {
    use plantain_world::{Split, caption_detailed, check, render, sample_scene};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn plain_prompts_read_as_scenes() {
        let p = read_world_prompt("a red star in the top left and a blue circle at the bottom on a yellow background").unwrap();
        assert_eq!(p.scene.background, Background::Solid(ColorName::Yellow));
        assert_eq!(p.scene.objects.len(), 2);
        assert_eq!(
            (p.scene.objects[0].color, p.scene.objects[0].shape, p.scene.objects[0].cell()),
            (ColorName::Red, Shape::Star, (HPos::Left, VPos::Top))
        );
        assert_eq!(p.stated.absolute, vec![true, true]);
        let p = read_world_prompt("a small green box above a heart in pink, under a blue sky above brown ground, warm light from the left")
            .unwrap();
        assert_eq!(p.scene.background, Background::Split { sky: ColorName::Blue, ground: ColorName::Brown });
        assert_eq!(p.stated.absolute, vec![false, false]);
        assert_eq!(p.stated.relations.len(), 1);
        assert_eq!(p.scene.lighting.direction, Some(LightDir::Left));
        assert_eq!(p.scene.objects[0].size, Size::Small);
    }

    #[test]
    fn anything_outside_the_world_is_not_a_world_prompt() {
        for prompt in [
            "a red star on a yellow background, 35mm photo",
            "a cat on a sofa",
            "a red star",
            "a red star on a yellow background with the text \"SALE\"",
        ] {
            assert!(read_world_prompt(prompt).is_none(), "{prompt}");
        }
    }

    /// Every caption the world writes reads back to a plan its own picture satisfies, stating as
    /// much as the caption did.
    #[test]
    fn the_worlds_captions_read_back_to_what_they_state() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut read = 0;
        for k in 0..400 {
            let split = if k % 2 == 0 { Split::Train } else { Split::HeldOut };
            let scene = sample_scene(&mut rng, split);
            let caption = caption_detailed(&scene, &mut rng);
            let Some(p) = read_world_prompt(&caption.text) else { panic!("not read: {}", caption.text) };
            read += 1;
            assert_eq!(p.scene.background, scene.background, "{}", caption.text);
            assert_eq!(p.scene.objects.len(), scene.objects.len(), "{}", caption.text);
            let absolute = caption.stated.absolute.iter().filter(|&&a| a).count();
            assert_eq!(p.stated.absolute.iter().filter(|&&a| a).count(), absolute, "{}", caption.text);
            assert_eq!(p.stated.relations.len(), caption.stated.relations.len(), "{}", caption.text);
            if k % 4 == 0 {
                let img = render(&scene, 192, 192);
                assert!(check(&p.scene, &img).satisfies(&p.stated), "the true picture fails the plan of: {}", caption.text);
            }
        }
        assert_eq!(read, 400);
    }
}
