"""nightseg.bench: correctness only (the auto path computes the same thing, MACs are counted
right, the CLI writes the documented JSON). No timing is asserted."""

import json

import pytest
import torch
from torch import nn

from nightseg import bench
from nightseg.infra import hardware
from nightseg.tools.bench import models as bench_models
from nightseg.tools.bench.timing import count_macs, inference_context

CPU = torch.device("cpu")


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0), (2, 1)])
def test_mac_count_of_one_conv_matches_hand_count(stride, padding):
    h, w, c_in, c_out, k = 20, 30, 4, 6, 3
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding)
    h_out = (h + 2 * padding - k) // stride + 1
    w_out = (w + 2 * padding - k) // stride + 1
    assert count_macs(conv, torch.randn(1, c_in, h, w)) == h_out * w_out * c_out * c_in * k * k


def test_mac_count_of_a_linear_layer():
    assert count_macs(nn.Linear(7, 5), torch.randn(3, 7)) == 3 * 7 * 5


@pytest.mark.parametrize("name", bench.MODELS)
def test_auto_path_matches_fp32_reference(name):
    reference, optimized = bench_models.model_pair(name, CPU)
    image = torch.rand(1, 3, 40, 72, generator=torch.Generator().manual_seed(0))
    with inference_context(CPU, optimized=False):
        ref = reference(image).float()
    with inference_context(CPU, optimized=True):
        fast = optimized(image).float()
    assert fast.shape == ref.shape
    # bf16 keeps ~3 significant digits; untrained nets have no margin to hide it in, so compare
    # the error to the output's own spread rather than expect identical values.
    err = (fast - ref).abs()
    assert err.mean() / ref.std() < 0.05
    assert err.max() / (ref.max() - ref.min()) < 0.25


def test_models_have_the_documented_sizes():
    sizes = {name: bench_models.inference_params(bench_models.build_model(name, channels_last=False)) / 1e6
             for name in bench.MODELS}
    assert sizes["segmenter"] == pytest.approx(2.49, abs=0.01)
    assert sizes["translator_full"] == pytest.approx(11.38, abs=0.01)
    assert sizes["translator_light"] == pytest.approx(1.01, abs=0.01)
    assert sizes["pipeline_light"] == pytest.approx(sizes["segmenter"] + sizes["translator_light"])


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "segformer"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--train-batch-size", "1"])


@pytest.mark.slow
def test_cli_end_to_end_writes_the_documented_json(tmp_path):
    out = tmp_path / "bench.json"
    # 32x48: the PatchGAN critics of the CycleGAN training step need at least ~32 pixels.
    bench.main(["--height", "32", "--width", "48", "--runs", "1", "--warmup", "0",
                "--train-runs", "1", "--train-warmup", "0", "--train-batch-size", "2",
                "--threads", "1", "--device", "cpu", "--json", str(out)])
    result = json.loads(out.read_text())
    assert set(result) == {"device", "machine", "auto_precision", "resolution", "conv_peak_gflops",
                           "models", "training"}
    assert result["device"] == "cpu" and result["resolution"] == [32, 48]
    assert result["auto_precision"] == hardware.auto_precision(cuda=False)[0]
    assert hardware.cpu_class().tier in result["machine"]
    assert isinstance(result["conv_peak_gflops"], float) and result["conv_peak_gflops"] > 0
    assert set(result["models"]) == set(bench.MODELS)
    model_keys = {"gmacs", "params_m", "reference_ms", "auto_ms", "speedup", "fps",
                  "peak_fraction"}
    for r in result["models"].values():
        assert set(r) == model_keys and all(isinstance(v, float) and v > 0 for v in r.values())
    assert set(result["training"]) == set(bench.TRAINING)
    for r in result["training"].values():
        assert set(r) == {"reference_ms", "auto_ms", "speedup"}
        assert all(isinstance(v, float) and v > 0 for v in r.values())
    pipeline, parts = result["models"]["pipeline_light"], result["models"]
    assert pipeline["gmacs"] == pytest.approx(parts["segmenter"]["gmacs"]
                                              + parts["translator_light"]["gmacs"], rel=0.01)


@pytest.mark.slow
def test_compiled_optimized_path_matches_reference():
    reference, compiled = bench_models.model_pair("translator_light", CPU, compile_optimized=True)
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with inference_context(CPU, optimized=False):
        ref = reference(image)
    with inference_context(CPU, optimized=True):
        fast = compiled(image).float()
    assert (fast - ref).abs().mean() / ref.std() < 0.05


@pytest.mark.slow
def test_data_rows_time_files_and_prepared_arrays(tmp_path, capsys):
    out = tmp_path / "data.json"
    with pytest.raises(SystemExit):  # the first batch is not timed: two at least
        bench.parse_args(["--data", "--data-images", "3", "--batch-size", "2"])
    bench.main(["--data", "--data-images", "4", "--data-resize", "27", "48", "--data-crop", "16", "16",
                "--data-epochs", "1", "--batch-size", "2", "--json", str(out)])
    r = json.loads(out.read_text())["data"]
    assert r["images"] == 4 and r["source_size"] == [720, 1280] and r["resize"] == [27, 48]
    assert set(r["samples_per_s"]) == {"files", "prepared_warm", "prepared_cold"}
    assert all(v > 0 for v in r["samples_per_s"].values())
    assert r["bytes_per_image"] >= 27 * 48 * 4  # image and label bytes, plus the header's share
    assert "prepared_warm" in capsys.readouterr().out
