//! The object probe: a linear head on the UNet's last feature map, pooled over each object's
//! box, must name that object's shape and colour. The shipped model's UNet ignores shape words
//! (`--example word_response`: changing one moves its prediction 1-6% of the way, a colour word
//! 14-61%) although its text encoder tells them apart; a wrong shape costs the diffusion loss
//! too little to teach the UNet to carry the word to where the object is drawn. The probe asks
//! for exactly that, at every noise level, also where only the caption can say the shape. The
//! head is not exported: the UNet stays a plain `UNet2DConditionModel`.

use candle_core::{DType, Device, Result, Tensor};
use plantain_world::{ColorName, Object, Scene, Shape};

use crate::nn::{Linear, Store};

const SHAPES: usize = Shape::ALL.len();
const COLORS: usize = ColorName::ALL.len();

/// The feature cells (row-major on a `cols` x `rows` grid over a `width` x `height` canvas)
/// whose centres lie inside the object's box; the cell under its centre when none does.
pub fn object_cells(o: &Object, (width, height): (u32, u32), (cols, rows): (usize, usize)) -> Vec<usize> {
    let (cx, cy) = o.center_px(width, height);
    let half = o.extent_px(width, height) / 2.0;
    let (cw, ch) = (width as f32 / cols as f32, height as f32 / rows as f32);
    let mut cells = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            let (x, y) = ((c as f32 + 0.5) * cw, (r as f32 + 0.5) * ch);
            if (x - cx).abs() <= half && (y - cy).abs() <= half {
                cells.push(r * cols + c);
            }
        }
    }
    if cells.is_empty() {
        let c = ((cx / cw) as usize).min(cols - 1);
        let r = ((cy / ch) as usize).min(rows - 1);
        cells.push(r * cols + c);
    }
    cells
}

pub struct ObjectProbe {
    head: Linear,
}

impl ObjectProbe {
    pub fn new(s: &mut Store, channels: usize) -> Result<Self> {
        Ok(Self { head: Linear::new(s, "object_probe", channels, SHAPES + COLORS, true)? })
    }

    /// Mean cross-entropy of each captioned object's shape and colour, predicted from the
    /// features `[B, C, rows, cols]` averaged over its box; None when no item is captioned.
    pub fn loss(&self, features: &Tensor, scenes: &[Scene], captioned: &[bool], canvas: (u32, u32)) -> Result<Option<Tensor>> {
        let (b, c, rows, cols) = features.dims4()?;
        let cells = rows * cols;
        let mut pool = Vec::new();
        let (mut shapes, mut colors) = (Vec::new(), Vec::new());
        for (i, scene) in scenes.iter().enumerate().take(b) {
            if !captioned[i] {
                continue;
            }
            for o in &scene.objects {
                let mut row = vec![0f32; b * cells];
                let inside = object_cells(o, canvas, (cols, rows));
                for &k in &inside {
                    row[i * cells + k] = 1.0 / inside.len() as f32;
                }
                pool.extend(row);
                shapes.push(Shape::ALL.iter().position(|&s| s == o.shape).expect("known shape") as u32);
                colors.push(ColorName::ALL.iter().position(|&x| x == o.color).expect("palette colour") as u32);
            }
        }
        let m = shapes.len();
        if m == 0 {
            return Ok(None);
        }
        let pool = Tensor::from_vec(pool, (m, b * cells), &Device::Cpu)?;
        let flat = features.permute((0, 2, 3, 1))?.reshape((b * cells, c))?;
        let logits = self.head.forward(&pool.matmul(&flat)?)?;
        let shapes = Tensor::from_vec(shapes, m, &Device::Cpu)?;
        let colors = Tensor::from_vec(colors, m, &Device::Cpu)?;
        let shape_loss = candle_nn::loss::cross_entropy(&logits.narrow(1, 0, SHAPES)?.contiguous()?, &shapes)?;
        let color_loss = candle_nn::loss::cross_entropy(&logits.narrow(1, SHAPES, COLORS)?.contiguous()?, &colors)?;
        Ok(Some((shape_loss + color_loss)?))
    }
}

/// The probe's accuracy on shapes, for logs and tests: the share of captioned objects whose
/// shape the head ranks first.
pub fn shape_accuracy(probe: &ObjectProbe, features: &Tensor, scenes: &[Scene], canvas: (u32, u32)) -> Result<f64> {
    let (b, c, rows, cols) = features.dims4()?;
    let (mut right, mut total) = (0usize, 0usize);
    for (i, scene) in scenes.iter().enumerate().take(b) {
        let map = features.get(i)?.reshape((c, rows * cols))?;
        for o in &scene.objects {
            let idx: Vec<u32> = object_cells(o, canvas, (cols, rows)).into_iter().map(|k| k as u32).collect();
            let n = idx.len();
            let pooled = (map.index_select(&Tensor::from_vec(idx, n, &Device::Cpu)?, 1)?.sum(1)? / n as f64)?;
            let logits = probe.head.forward(&pooled.unsqueeze(0)?)?.narrow(1, 0, SHAPES)?;
            let best = logits.argmax(1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?[0] as usize;
            right += usize::from(Shape::ALL[best] == o.shape);
            total += 1;
        }
    }
    Ok(if total == 0 { 0.0 } else { right as f64 / total as f64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use plantain_world::{HPos, Size, VPos};

    fn object(shape: Shape, color: ColorName, size: Size, h: HPos, v: VPos) -> Object {
        Object { shape, color, size, h, v, jitter: (0.0, 0.0) }
    }

    #[test]
    fn an_objects_cells_cover_its_box() {
        // 64 px canvas, 16x16 cells of 4 px: a large (0.26 x 64 = 16.6 px) object in the middle
        // covers the 4x4 cells around the centre (32, 32).
        let o = object(Shape::Circle, ColorName::Red, Size::Large, HPos::Center, VPos::Middle);
        let cells = object_cells(&o, (64, 64), (16, 16));
        assert_eq!(cells.len(), 16);
        assert!(cells.iter().all(|&k| (6..10).contains(&(k / 16)) && (6..10).contains(&(k % 16))));
        // A small one at the top left sits in the top-left third; a tiny grid still gets a cell.
        let s = object(Shape::Star, ColorName::Blue, Size::Small, HPos::Left, VPos::Top);
        assert!(object_cells(&s, (64, 64), (16, 16)).iter().all(|&k| k / 16 < 6 && k % 16 < 6));
        assert_eq!(object_cells(&s, (64, 64), (1, 1)), vec![0]);
        // On a wide canvas the columns stretch: right column objects land in the right third.
        let r = object(Shape::Star, ColorName::Blue, Size::Small, HPos::Right, VPos::Bottom);
        assert!(object_cells(&r, (96, 48), (24, 12)).iter().all(|&k| k % 24 >= 16 && k / 24 >= 8));
    }

    #[test]
    fn features_that_name_the_shape_give_a_low_loss_and_others_do_not() {
        // Features: channel k is 10 where an object of shape k is (by its cells), else 0; a
        // head that reads channel k as shape k then scores near-perfectly.
        let scene = |shape| Scene {
            background: plantain_world::Background::Solid(ColorName::White),
            lighting: plantain_world::Lighting::NEUTRAL,
            objects: vec![object(shape, ColorName::Red, Size::Large, HPos::Left, VPos::Top)],
            relations: Vec::new(),
        };
        let scenes = vec![scene(Shape::Star), scene(Shape::Ring)];
        let (c, side) = (SHAPES + COLORS, 8);
        let mut feats = vec![0f32; 2 * c * side * side];
        for (i, s) in scenes.iter().enumerate() {
            let o = &s.objects[0];
            let shape = Shape::ALL.iter().position(|&x| x == o.shape).unwrap();
            let color = SHAPES + ColorName::ALL.iter().position(|&x| x == o.color).unwrap();
            for k in object_cells(o, (64, 64), (side, side)) {
                feats[(i * c + shape) * side * side + k] = 10.0;
                feats[(i * c + color) * side * side + k] = 10.0;
            }
        }
        let features = Tensor::from_vec(feats, (2, c, side, side), &Device::Cpu).unwrap();
        let mut store = Store::new(0);
        store.preset("object_probe.weight", Tensor::eye(c, DType::F32, &Device::Cpu).unwrap()).unwrap();
        store.preset("object_probe.bias", Tensor::zeros(c, DType::F32, &Device::Cpu).unwrap()).unwrap();
        let probe = ObjectProbe::new(&mut store, c).unwrap();
        let loss = |scenes: &[Scene], captioned: &[bool]| {
            probe.loss(&features, scenes, captioned, (64, 64)).unwrap().map(|l| l.to_scalar::<f32>().unwrap())
        };
        let right = loss(&scenes, &[true, true]).unwrap();
        assert!(right < 0.01, "{right}");
        assert_eq!(shape_accuracy(&probe, &features, &scenes, (64, 64)).unwrap(), 1.0);
        // The same features against swapped shapes: wrong, and costly.
        let swapped = vec![scene(Shape::Ring), scene(Shape::Star)];
        assert!(loss(&swapped, &[true, true]).unwrap() > 5.0);
        assert_eq!(shape_accuracy(&probe, &features, &swapped, (64, 64)).unwrap(), 0.0);
        // Uncaptioned items are left out; none captioned, no loss.
        assert!(loss(&swapped, &[true, false]).unwrap() > 5.0);
        assert!(loss(&scenes, &[false, false]).is_none());
    }
}
