#!/usr/bin/env python3
"""How ONNX Runtime holds weights, on a toy: 24 convolutions of 1280x1280x3x3 (1.41 GB in f32).

Why the engine widens half-precision weights into a file (not a Cast in the graph) and pins each
int8 convolution's dequantisation to the convolution's own input (README, "Lean memory"). Each
form is loaded by a process of its own; printed: the session build's peak RSS, RSS after three
runs, and the median run time.

    $PYTHON scripts/probe_ort_weight_memory.py      # needs onnx and onnxruntime==1.31.1

Forms: f32 (f32 external data), f16-cast (f16 initializers cast to f32 in the graph), dq-free
(int8 + per-channel DequantizeLinear, nothing pinning it), dq-pinned (the scales reshaped by a
shape computed from the convolution's input, as `GraphBuilder::dequantized` does).
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

LAYERS, C = 24, 1280
FORMS = ["f32", "f16-cast", "dq-free", "dq-pinned"]


def build(form: str, path: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes, inits, x = [], [i64("zero", [0]), i64("rows", [C])], "x"
    for i in range(LAYERS):
        w = rng.standard_normal((C, C, 3, 3), dtype=np.float32) * 0.01
        if form == "f32":
            inits.append(numpy_helper.from_array(w, f"w{i}"))
        elif form == "f16-cast":
            inits.append(numpy_helper.from_array(w.astype(np.float16), f"h{i}"))
            nodes.append(helper.make_node("Cast", [f"h{i}"], [f"w{i}"], to=TensorProto.FLOAT))
        else:
            s = (np.abs(w).reshape(C, -1).max(1) / 127).astype(np.float32)
            q = np.clip(np.round(w / s[:, None, None, None]), -127, 127).astype(np.int8)
            inits += [numpy_helper.from_array(q, f"q{i}"), numpy_helper.from_array(s, f"s{i}")]
            scales = f"s{i}"
            if form == "dq-pinned":
                nodes += [
                    helper.make_node("Shape", [x], [f"sh{i}"], start=0, end=1),
                    helper.make_node("Mul", [f"sh{i}", "zero"], [f"z{i}"]),
                    helper.make_node("Add", [f"z{i}", "rows"], [f"t{i}"]),
                    helper.make_node("Reshape", [f"s{i}", f"t{i}"], [f"sp{i}"]),
                ]
                scales = f"sp{i}"
            nodes.append(helper.make_node("DequantizeLinear", [f"q{i}", scales], [f"w{i}"], axis=0))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"y{i}"], pads=[1, 1, 1, 1]))
        x = f"y{i}"
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", C, 16, 16])
    out = helper.make_tensor_value_info(x, TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "probe", [inp], [out], inits), opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.save(model, path, save_as_external_data=True, location=os.path.basename(path) + ".bin")


def status_gb(field: str) -> float:
    """A /proc/self/status size: VmRSS now, VmHWM the peak of this process image (unlike
    ru_maxrss, which a child inherits from the parent that forked it)."""
    with open("/proc/self/status") as f:
        return int(f.read().split(field + ":")[1].split()[0]) / 1e6


def measure(path: str) -> None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    session = ort.InferenceSession(path, so)
    build_peak = status_gb("VmHWM")
    x = np.random.rand(1, C, 16, 16).astype(np.float32)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        session.run(None, {"x": x})
        times.append(time.perf_counter() - t)
    print(f"build peak {build_peak:.2f} GB, RSS after runs {status_gb('VmRSS'):.2f} GB, run {sorted(times)[1]:.2f} s")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        measure(sys.argv[2])
        return
    with tempfile.TemporaryDirectory() as d:
        for form in FORMS:
            path = os.path.join(d, f"{form}.onnx")
            build(form, path)
            # A fresh process, so that the peak is the session's alone.
            line = subprocess.run([sys.executable, __file__, "--measure", path], check=True, capture_output=True, text=True).stdout
            print(f"{form:10s} {line.strip()}", flush=True)


if __name__ == "__main__":
    main()
