use std::path::Path;

use super::*;

/// A compact-SRVGG-like 2x net: out = pixel_shuffle(prelu(conv1x1(x))) + nearest2x(x), with an
/// fp16 kernel and fp32 bias, and the weights it reads.
const PARAM: &str = "7767517
7 8
Input            in      0 1 data
Split            sp      1 2 data d0 d1
Convolution      conv    1 1 d1 c 0=12 1=1 5=1 6=36
PReLU            act     1 1 c p 0=12
PixelShuffle     ps      1 1 p s 0=2
Interp           up      1 1 d0 n 0=1 1=2.000000e+00 2=2.000000e+00
BinaryOp         add     2 1 s n output
";

fn kernel() -> Vec<f32> {
    (0..36).map(|i| (i as f32 - 17.0) / 16.0).collect()
}
fn bias() -> Vec<f32> {
    (0..12).map(|i| i as f32 * 0.125 - 0.5).collect()
}
fn slopes() -> Vec<f32> {
    (0..12).map(|i| 0.05 * i as f32).collect()
}

fn bin() -> Vec<u8> {
    let mut b = TAG_FP16.to_le_bytes().to_vec();
    b.extend(kernel().iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()));
    b.extend(bias().iter().flat_map(|v| v.to_le_bytes()));
    b.extend(slopes().iter().flat_map(|v| v.to_le_bytes()));
    b
}

fn write(dir: &Path, param: &str, bin: &[u8]) -> (PathBuf, PathBuf) {
    let (p, b) = (dir.join("net.param"), dir.join("net.bin"));
    std::fs::write(&p, param).unwrap();
    std::fs::write(&b, bin).unwrap();
    (p, b)
}

#[test]
fn params_read_scalars_arrays_and_defaults() {
    let line = "Convolution c 1 1 a b 0=32 1=3 4=1 5=1 6=864 9=2 -23310=1,2.000000e-01";
    let l = parse_layer(line).unwrap();
    assert_eq!((l.kind.as_str(), l.inputs.clone(), l.outputs.clone()), ("Convolution", vec!["a".into()], vec!["b".into()]));
    assert_eq!((l.int(0, 0), l.int(11, l.int(1, 0)), l.int(3, 1)), (32, 3, 1));
    assert_eq!(l.array(10), &[0.2]);
    assert!(parse_layer("Eltwise e 2 1 a b c 0=1 -23301=3,1.0,2.0").unwrap_err().contains("announces 3"));
    assert!(parse_layer("Split s 1 2 a b").unwrap_err().contains("output blob"));
    let p = Path::new("x.param");
    assert!(parse_param("{\"not\": \"ncnn\"}", p).unwrap_err().to_string().contains("magic"));
    assert!(parse_param("7767517\n2 2\nInput in 0 1 data\n", p).unwrap_err().to_string().contains("announces 2 layers"));
}

#[test]
fn weights_are_laid_over_the_bin_and_its_size_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let (p, b) = write(dir.path(), PARAM, &bin());
    let net = NcnnNet::open(&p, &b).unwrap();
    assert_eq!(net.scale("output"), Some(2.0));
    match &net.layers[2].1 {
        LayerWeights::Conv { kernel, bias: Some(bias) } => {
            assert_eq!((kernel.dtype, kernel.shape.clone(), kernel.offset), (DType::F16, vec![12, 3, 1, 1], 4));
            assert_eq!((bias.dtype, bias.offset), (DType::F32, 4 + 72));
        }
        other => panic!("conv weights: {other:?}"),
    }
    let mut longer = bin();
    longer.extend([0u8; 8]);
    let (p, b) = write(dir.path(), PARAM, &longer);
    let err = NcnnNet::open(&p, &b).unwrap_err().to_string();
    assert!(err.contains("another network"), "{err}");
    let mut quantised = bin();
    quantised[0] = 7;
    let (p, b) = write(dir.path(), PARAM, &quantised);
    let err = NcnnNet::open(&p, &b).unwrap_err().to_string();
    assert!(err.contains("not a valid ncnn model file") && err.contains("quantised"), "{err}");
    let (p, b) = write(dir.path(), &PARAM.replace("PixelShuffle     ps", "Deconvolution    ps"), &bin());
    assert!(NcnnNet::open(&p, &b).unwrap_err().to_string().contains("Deconvolution is not supported"));
}

/// What the net computes, written out by hand.
fn expected(x: &ndarray::Array4<f32>) -> ndarray::Array4<f32> {
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let k: Vec<f32> = kernel().iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    let (b, s) = (bias(), slopes());
    ndarray::Array4::from_shape_fn((1, 3, 2 * h, 2 * w), |(_, c, y, xx)| {
        let (sy, sx) = (y / 2, xx / 2);
        let ch = c * 4 + (y % 2) * 2 + xx % 2;
        let v = (0..3).map(|i| k[ch * 3 + i] * x[[0, i, sy, sx]]).sum::<f32>() + b[ch];
        let v = if v >= 0.0 { v } else { v * s[ch] };
        v + x[[0, c, sy, sx]]
    })
}

#[test]
fn the_graph_computes_what_the_layers_say() {
    let dir = tempfile::tempdir().unwrap();
    let (p, b) = write(dir.path(), PARAM, &bin());
    let graph = NcnnNet::open(&p, &b).unwrap().build("data", "output").unwrap();
    let net = crate::runtime::Network::new(&graph, "ncnn-test", &crate::runtime::RuntimeOptions::default()).unwrap();
    let x = ndarray::Array4::from_shape_fn((1, 3, 5, 7), |(_, c, y, xx)| ((c * 35 + y * 7 + xx) as f32 * 0.37).sin());
    let out = net.run(vec![("data", crate::runtime::Input::F32(x.clone().into_dyn()))]).unwrap();
    let got = &out["output"];
    let want = expected(&x);
    assert_eq!(got.shape(), want.shape());
    let diff = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "max difference {diff}");
}
