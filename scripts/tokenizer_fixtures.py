#!/usr/bin/env python3
"""Write fixtures/tokenizer/clip_ids.json: reference CLIP token ids for plantain-tokenizer.

The reference is Hugging Face's *slow* (pure Python) `CLIPTokenizer` with `ftfy` installed:
that is the class diffusers' Stable Diffusion pipelines used through transformers 4.x, and
its text cleanup (ftfy.fix_text, whitespace cleanup, lowercase) is the one OpenAI CLIP was
trained with. transformers 5 dropped the slow class (its `CLIPTokenizer` is the `tokenizers`
backed one, which uses NFC instead of ftfy), so this script needs transformers 4.x:

    python3 -m venv /tmp/tokvenv
    /tmp/tokvenv/bin/pip install "transformers>=4.50,<5" ftfy regex
    /tmp/tokvenv/bin/python scripts/tokenizer_fixtures.py

For information the fixture also records whether the fast (`tokenizers`) CLIP tokenizer
agrees on each prompt; the Rust tests only check the slow reference.

The vocabulary is the repository's own assets/clip-tokenizer/ (vocab.json + merges.txt).
"""

import json
import os
import shutil
import sys
import tempfile

import ftfy  # noqa: F401  (the slow tokenizer silently falls back to BasicTokenizer without it)
import transformers
from transformers import CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "assets", "clip-tokenizer")
FIXTURES = os.path.join(ROOT, "fixtures", "tokenizer")
OUT = os.path.join(FIXTURES, "clip_ids.json")

LONG = (
    "a highly detailed matte painting of a sprawling cyberpunk city at night, neon lights "
    "reflecting on wet streets, flying cars, towering skyscrapers with holographic "
    "advertisements, crowds of people with umbrellas, steam rising from vents, cinematic "
    "lighting, volumetric fog, ultra wide angle, 8k resolution, trending on artstation, "
    "by greg rutkowski and syd mead and moebius, octane render, unreal engine 5, sharp focus, "
    "intricate details, masterpiece, best quality, award winning photograph"
)

PROMPTS = [
    # ordinary prompts
    "a photograph of an astronaut riding a horse",
    "A cat sitting on a windowsill, watching the rain",
    "portrait of a woman, oil on canvas, rembrandt lighting",
    "",
    "cat",
    "a",
    # case, whitespace
    "A PHOTO OF A DOG IN THE SNOW",
    "MiXeD CaSe PrOmPt With CamelCaseWords",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nand   multiple    spaces",
    "\u3000ideographic\u3000space and\u00a0no-break\u00a0space",
    # punctuation, numbers
    "hello, world! how are you? (masterpiece:1.2), [best quality], {detailed}",
    "1girl, 2boys, 3d render, 4k, 8k uhd, 1920x1080, 16:9, 3.14159",
    "price: $19.99 (50% off!!!) -- limited time ... #sale @shop & more",
    "c++ && rust || python; <tag> a->b => c",
    "!!! ??? ... ,,, ;;; ::: --- ___",
    "((((ultra detailed)))) [[[[bad hands]]]]",
    "2024-01-15T10:30:00Z 12,345,678.90",
    # apostrophes / contractions
    "it's a dog's life, isn't it? they're here, we've won, i'm sure, you'll see, he'd go",
    "IT'S A DOG'S LIFE, ISN'T IT? THEY'RE HERE, I'M SURE",
    "rock 'n' roll, o'brien's pub, 'quoted', ''double''",
    "don\u2019t stop \u201cbelieving\u201d \u2018single\u2019",
    # accents / other scripts
    "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve pi\u00f1ata, \u00fcber stra\u00dfe",
    "cafe\u0301 (combining accent) vs caf\u00e9",
    "\u00c9COLE \u00c0 PARIS, \u00d1and\u00fa, \u00c5ngstr\u00f6m",
    "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \u03ba\u03b1\u03b9 \u03c3\u03bf\u03c6\u03af\u03b1",
    "\u043c\u043e\u0441\u043a\u0432\u0430 \u0437\u0438\u043c\u043e\u0439, \u041a\u0420\u0410\u0421\u041d\u0410\u042f \u041f\u041b\u041e\u0429\u0410\u0414\u042c",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea \u0939\u093f\u0928\u094d\u0926\u0940 \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
    # CJK
    "\u4e00\u53ea\u53ef\u7231\u7684\u732b\u5728\u8349\u5730\u4e0a",
    "\u65e5\u672c\u8a9e\u306e\u30d7\u30ed\u30f3\u30d7\u30c8\u3001\u5bcc\u58eb\u5c71\u3068\u685c",
    "\ud55c\uad6d\uc5b4 \ud504\ub86c\ud504\ud2b8 \uc11c\uc6b8\uc758 \ubc24",
    "mixed \u4e2d\u6587 and english \u82f1\u8bed words",
    # emoji and symbols
    "a cute dog \U0001f436 with sunglasses \U0001f60e and a party hat \U0001f389",
    "family emoji \U0001f468\u200d\U0001f469\u200d\U0001f467 and flag \U0001f1ef\U0001f1f5 and \u2764\ufe0f",
    "\u2605\u2606\u2665 \u00a9 \u00ae \u2122 \u00b0C \u00b1 \u00d7 \u00f7 \u221e \u2192 \u2190",
    # text ftfy fixes (fullwidth, ligatures, html entities)
    "\uff2c\uff2f\uff35\uff24 \uff2e\uff2f\uff29\uff33\uff25\uff33\uff01 \uff11\uff12\uff13",
    "\ufb01ne \ufb02owers, o\ufb03ce",
    "salt &amp; pepper, fish &amp;amp; chips, &lt;3, caf&eacute;, &#169; &#x263A;",
    "a < b &amp; c",
    "&EACUTE;COLE &NTILDE; &nTILDE; &#59; &#0; &#128; &#12abc; &#x1F600; &#1;x &Jscr;",
    "curly \x93c1 quotes\x94 and \x80 euro, \x85 ellipsis",
    "\x1b[31mred\x1b[0m text, con\x00trol\x07 chars\ufeff and zero\u200bwidth",
    "it\u02bcs \u01c8ubljana \u01f2, \uff76\uff9e\uff77\uff9e",
    "line\u2028separator\u2029paragraph",
    "a\u0345b \u1fb3 it'\u017f",
    # special tokens inside the text
    "a photo <|endoftext|> of a cat",
    "<|startoftext|>hello<|endoftext|>",
    "<|ENDOFTEXT|> upper special",
    # long prompts (truncated at 77)
    LONG,
    LONG + ", " + LONG,
    " ".join(["word"] * 80),
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 300,
]

# (prompt, max_length) pairs exercising truncation at other lengths.
SHORT_MAX = [
    ("a photograph of an astronaut riding a horse on the moon", 8),
    ("a photograph of an astronaut riding a horse", 3),
    ("a photograph", 10),
]

ADDED = ["<cat-toy>", "<sks>"]
ADDED_PROMPTS = [
    "a photo of <cat-toy> on a beach",
    "<cat-toy><sks> in the style of <sks>",
    "a <CAT-TOY> stays lowercase text",
]


# tokenizer_config.json / special_tokens_map.json modelled on the Stable Diffusion 2.x hub folder
# (stabilityai/stable-diffusion-2-1, tokenizer/): the map says pad "!", the config says
# <|endoftext|>, and transformers lets special_tokens_map.json win.
def _added(content):
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


SD2_SPECIAL_TOKENS_MAP = {
    "bos_token": _added("<|startoftext|>"),
    "eos_token": _added("<|endoftext|>"),
    "pad_token": "!",
    "unk_token": _added("<|endoftext|>"),
}
SD2_TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "bos_token": {"__type": "AddedToken", **_added("<|startoftext|>")},
    "do_lower_case": True,
    "eos_token": {"__type": "AddedToken", **_added("<|endoftext|>")},
    "errors": "replace",
    "model_max_length": 77,
    "name_or_path": "stabilityai/stable-diffusion-2",
    "pad_token": "<|endoftext|>",
    "special_tokens_map_file": "./special_tokens_map.json",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": {"__type": "AddedToken", **_added("<|endoftext|>")},
}

CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def tokenizer_folder(configs):
    """A temporary tokenizer folder: the repo's vocab + merges plus the given config files."""
    d = tempfile.mkdtemp()
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(ASSETS, f), d)
    for name, obj in configs.items():
        with open(os.path.join(d, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
    return d


def keep_configs(src, name):
    """Copy a folder's small config files (not vocab/merges) into fixtures/tokenizer/<name>/."""
    dst = os.path.join(FIXTURES, name)
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for f in CONFIG_FILES:
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), dst)


def encode_case(tok, prompt, max_length):
    ids = tok(prompt, add_special_tokens=True)["input_ids"]
    padded = tok(
        prompt, padding="max_length", max_length=max_length, truncation=True
    )["input_ids"]
    return {"ids": ids, "padded": padded}


def main():
    if not transformers.__version__.startswith("4."):
        sys.exit(f"needs transformers 4.x for the slow CLIPTokenizer, found {transformers.__version__}")
    os.makedirs(FIXTURES, exist_ok=True)
    # SD 1.x: the plain folder, pads with <|endoftext|>.
    sd1 = CLIPTokenizer.from_pretrained(ASSETS)
    assert sd1.fix_text is not None, "ftfy missing: the slow tokenizer would use BasicTokenizer"
    # SD 2.x: pad "!" from special_tokens_map.json. "!" then is a special token, and HF splits
    # it out of the prompt text like <|endoftext|> (so "!!!" gives three id-0 tokens).
    sd2_dir = tokenizer_folder(
        {"tokenizer_config.json": SD2_TOKENIZER_CONFIG, "special_tokens_map.json": SD2_SPECIAL_TOKENS_MAP}
    )
    sd2 = CLIPTokenizer.from_pretrained(sd2_dir)
    keep_configs(sd2_dir, "sd2-config")
    shutil.rmtree(sd2_dir)
    assert sd1.pad_token_id == 49407 and sd2.pad_token_id == 0, (sd1.pad_token_id, sd2.pad_token_id)
    try:
        from transformers import CLIPTokenizerFast

        fast = CLIPTokenizerFast.from_pretrained(ASSETS, from_slow=True)
    except Exception as e:  # informational only
        print("fast tokenizer unavailable:", e)
        fast = None

    cases = []
    for prompt, max_length in [(p, 77) for p in PROMPTS] + SHORT_MAX:
        s1 = encode_case(sd1, prompt, max_length)
        case = {
            "prompt": prompt,
            "max_length": max_length,
            "tokens": sd1.convert_ids_to_tokens(s1["ids"]),
            "sd1": s1,
            "sd2": encode_case(sd2, prompt, max_length),
            "decoded": sd1.decode(s1["ids"], skip_special_tokens=True, clean_up_tokenization_spaces=False),
        }
        if fast is not None:
            case["fast_agrees"] = fast(prompt)["input_ids"] == s1["ids"]
        cases.append(case)

    # Added (textual-inversion style) tokens, as a saved tokenizer folder carries them.
    t = CLIPTokenizer.from_pretrained(ASSETS)
    t.add_tokens(ADDED)
    added_dir = tempfile.mkdtemp()
    t.save_pretrained(added_dir)
    t = CLIPTokenizer.from_pretrained(added_dir)
    keep_configs(added_dir, "added-config")
    shutil.rmtree(added_dir)
    added_ids = {a: t.convert_tokens_to_ids(a) for a in ADDED}
    added_cases = [dict(prompt=p, **encode_case(t, p, 77)) for p in ADDED_PROMPTS]

    out = {
        "generator": "scripts/tokenizer_fixtures.py",
        "reference": f"transformers {transformers.__version__} CLIPTokenizer (slow) with ftfy {ftfy.__version__}",
        "vocab": "assets/clip-tokenizer",
        "sd2_config": "fixtures/tokenizer/sd2-config",
        "bos_id": sd1.bos_token_id,
        "eos_id": sd1.eos_token_id,
        "cases": cases,
        "added_config": "fixtures/tokenizer/added-config",
        "added_tokens": added_ids,
        "added_cases": added_cases,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    disagree = [c["prompt"] for c in cases if c.get("fast_agrees") is False]
    print(f"wrote {len(cases)} cases + {len(added_cases)} added-token cases to {OUT}")
    print(f"fast tokenizer disagrees with slow on {len(disagree)}: {disagree!r}")


def rust_entities():
    """Print crates/tokenizer/src/entities.rs: the named HTML entities ftfy.fix_text decodes
    (the HTML5 names that end in ';', plus ftfy's upper-case variants such as &EACUTE;)."""
    from ftfy.chardata import HTML_ENTITIES

    table = sorted(HTML_ENTITIES.items())
    print("// @generated by `python3 scripts/tokenizer_fixtures.py --rust-entities` (ftfy " + ftfy.__version__ + ").")
    print("//! Named HTML entities that ftfy's `unescape_html` decodes: HTML5's names that end in `;`")
    print("//! and ftfy's upper-case variants (`&EACUTE;`). Sorted by name for binary search.")
    print()
    print("pub(crate) static ENTITIES: &[(&str, &str)] = &[")
    for k, v in table:
        lit = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else f"\\u{{{ord(c):04x}}}" for c in v)
        print(f'    ("{k[1:-1]}", "{lit}"),')
    print("];")


if __name__ == "__main__":
    if sys.argv[1:] == ["--rust-entities"]:
        rust_entities()
    else:
        main()
