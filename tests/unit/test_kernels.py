import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
import torch  # noqa: F401  (loaded, as in a worker: its kernel can run)
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


def test_small_indexes_use_a_kernel_with_no_set_up_and_big_ones_the_fastest_measured(
    monkeypatch, hide_simsimd
):
    codes = np.zeros((100, 64), np.int8)
    scales = np.ones(100, np.float32)
    assert kernels.choose(codes, scales) is kernels.simd_dots()
    hide_simsimd()
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


def test_the_private_torch_operator_is_only_measured_where_simsimd_is_missing(hide_simsimd):
    assert set(kernels.available()) == {"numpy", "onnx", "simsimd"}
    hide_simsimd()
    assert set(kernels.available()) == {"numpy", "onnx", "torch"}


@pytest.mark.parametrize("columns", [1, 2])
def test_simsimd_dots_are_the_exact_integer_products_of_the_rounded_query(columns):
    rng = np.random.default_rng(2)
    codes = rng.integers(-127, 128, (3000, 1280), dtype=np.int8)
    scales = rng.random(3000).astype(np.float32)
    query = rng.standard_normal(1280).astype(np.float32)
    dots, relative, dropped = kernels.SimdDots(columns, threads=2)(codes, scales, query)
    split, column_scales, _ = kernels.split_query(query, columns)
    exact = (codes.astype(np.int64) @ split.astype(np.int64)) @ column_scales * scales
    assert np.abs(dots - exact).max() <= relative * np.abs(exact).max()
    # what the rounded query misses, within Cauchy-Schwarz of the true products
    truth = (codes.astype(np.float64) @ query) * scales
    lengths = np.linalg.norm(codes * scales[:, None].astype(np.float64), axis=1)
    assert (np.abs(truth - exact) <= dropped * lengths + 1e-9).all()
    assert dropped < [2.0**-6, 2.0**-13][columns - 1] * np.linalg.norm(query)
    assert len(kernels.SimdDots(columns)(codes[:0], scales[:0], query)[0]) == 0


def test_simsimd_sums_of_extreme_codes_do_not_saturate():
    # SIMD int8 products are often summed in pairs as int16 first: 2 x 127^2 still fits
    codes = np.array([[127] * 1280, [-127] * 1280, [127, -127] * 640], np.int8)
    dots = kernels.SimdDots(1)(codes, np.ones(3, np.float32), np.ones(1280, np.float32))[0]
    assert dots.tolist() == [127 * 1280, -127 * 1280, 0]  # 127^2 x 1280, times the scale 1/127


def test_an_unavailable_kernel_is_named_in_the_error():
    with pytest.raises(ValueError, match="not available here: numpy"):
        kernels.named("cuda")


def test_the_precise_kernel_is_simsimds_with_two_columns_or_one_with_no_set_up_when_small(
    hide_simsimd,
):
    assert kernels.precise(10) is kernels.precise(10**6) is kernels.simd_dots(2)
    hide_simsimd()
    assert kernels.precise(1000) is kernels.numpy_dots
    assert isinstance(kernels.precise(kernels.MEASURE_FROM), kernels.OnnxDots)


# A query worker's task module, the web server and a ranking of every kind over an index big
# enough for the kernels to be measured: none may load torch (1.5-2 s, and a worker image
# without it must rank at full speed).
WITHOUT_TORCH = """
import sys, tempfile
from pathlib import Path

import numpy as np

import cbirq.tasks.rank, cbirq.web.app
from cbirq.rank import kernels
from cbirq.rank.index_cache import IndexCache
from cbirq.rank.options import RankOptions
from cbirq.rank.ranking import search
from cbirq.store.sqlite_store import SqliteStore

rows = np.abs(np.random.default_rng(0).standard_normal((kernels.MEASURE_FROM + 10, 16)))
rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype("<f4")
store = SqliteStore(Path(tempfile.mkdtemp()) / "s.db")
store.open_index("i", "m", "w")
store.add("i", [(f"p{i}", f"h{i}") for i in range(len(rows))],
          {f"h{i}": v.astype("<f2").tobytes() for i, v in enumerate(rows)})
index = IndexCache().get(store, "i")
for options in (RankOptions(), RankOptions(center=True, qe=5), RankOptions(whiten=True)):
    assert search(store, index, "i", rows[7], 3, "cosine", options)[0]["path"] == "p7"
assert set(kernels._chosen.timings) == {"numpy", "onnx", "simsimd"}  # measured, as a worker
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_workers_and_the_web_server_rank_without_loading_torch():
    found = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH], capture_output=True, text=True, timeout=300
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"


def test_a_pinned_kernel_scans_whatever_measures_fastest(monkeypatch):
    monkeypatch.setattr(kernels, "_pinned", None)
    codes = np.zeros((100, 64), np.int8)
    kernels.pin("numpy")
    assert kernels.choose(codes, np.ones(100, np.float32)) is kernels.numpy_dots
    kernels.pin(None)
    assert kernels.choose(codes, np.ones(100, np.float32)) is kernels.simd_dots()
