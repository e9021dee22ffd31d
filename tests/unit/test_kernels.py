import time

import numpy as np
import onnx
import pytest
import torch  # noqa: F401  (loaded, as in a worker: its kernel is available)
from onnx import TensorProto, helper

from cbirq.rank import kernels


def test_the_int8_graph_is_the_one_onnx_helper_builds():
    codes = helper.make_tensor_value_info("codes", TensorProto.INT8, ["n", "width"])
    query = helper.make_tensor_value_info("query", TensorProto.INT8, ["width", 2])
    dots = helper.make_tensor_value_info("dots", TensorProto.INT32, ["n", 2])
    node = helper.make_node("MatMulInteger", ["codes", "query"], ["dots"])
    graph = helper.make_graph([node], "int8_dots", [codes, query], [dots])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cbirq"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    assert model.SerializeToString() == kernels._INT8_GRAPH


def test_the_query_split_keeps_16_bits_of_it():
    query = np.random.default_rng(0).standard_normal(1280).astype(np.float32)
    columns, scales, dropped = kernels.split_query(query)
    assert columns.dtype == np.int8 and columns.shape == (1280, 2)
    rebuilt = columns.astype(np.float64) @ scales
    assert np.linalg.norm(query - rebuilt) == pytest.approx(dropped, rel=1e-6)
    assert dropped < 2.0**-14 * np.linalg.norm(query)
    assert kernels.split_query(np.zeros(4, np.float32))[2] == 0


def test_onnx_dots_are_the_exact_integer_products_scaled():
    rng = np.random.default_rng(1)
    codes = rng.integers(-127, 128, (300, 64), dtype=np.int8)
    scales = rng.random(300).astype(np.float32)
    query = rng.standard_normal(64).astype(np.float32)
    dots, _, dropped = kernels.OnnxDots(threads=1)(codes, scales, query)
    exact = (codes.astype(np.float64) @ query) * scales
    assert np.abs(dots - exact).max() <= dropped * np.abs(codes * scales[:, None]).sum(1).max()


def test_small_indexes_use_a_loaded_kernel_and_big_ones_the_fastest_measured(monkeypatch):
    codes = np.zeros((100, 64), np.int8)
    scales = np.ones(100, np.float32)
    assert kernels.choose(codes, scales) is kernels.torch_dots  # the tests have torch loaded
    monkeypatch.delitem(kernels.sys.modules, "torch")
    assert kernels.choose(codes, scales) is kernels.numpy_dots
    monkeypatch.setattr(kernels, "MEASURE_FROM", 50)
    monkeypatch.setattr(kernels, "_chosen", None)

    def slow(*args):
        time.sleep(0.01)
        return kernels.numpy_dots(*args)

    monkeypatch.setattr(
        kernels, "available", lambda: {"slow": lambda: slow, "numpy": lambda: kernels.numpy_dots}
    )
    assert kernels.choose(codes, scales) is kernels.numpy_dots
    assert set(kernels._chosen.timings) == {"slow", "numpy"}
    assert kernels._chosen.timings["slow"] > kernels._chosen.timings["numpy"]


def test_an_unavailable_kernel_is_named_in_the_error():
    with pytest.raises(ValueError, match="not available here: numpy"):
        kernels.named("cuda")


def test_the_precise_kernel_needs_no_set_up_for_small_indexes():
    assert kernels.precise(1000) is kernels.numpy_dots
    assert isinstance(kernels.precise(kernels.MEASURE_FROM), kernels.OnnxDots)
