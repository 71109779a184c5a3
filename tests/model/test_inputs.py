"""The model's input step (bands, indices, hidden pixels), pretrained weights mapped by band name,
test-time augmentation, and the prediction window that follows the training chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wetmap import config
from wetmap.bands import INDICES
from wetmap.errors import WetmapError
from wetmap.model.bundle import Bundle, save_bundle
from wetmap.model.inputs import InputStep
from wetmap.model.network import build_network
from wetmap.model.pretrained import S2_L1C, apply_weights, input_statistics, read_weights
from wetmap.predict.runner import TilePredictor

BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")


def raw_chip(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    raw = torch.from_numpy(rng.integers(1, 6000, (2, 6, 16, 16)).astype(np.float32))
    clear = torch.from_numpy(rng.random((2, 16, 16)) > 0.3)
    return raw, clear


def test_indices_are_the_normalised_differences_of_the_raw_bands() -> None:
    raw, clear = raw_chip()
    mean, std = np.full(6, 2000.0), np.full(6, 500.0)
    step = InputStep(BANDS, mean, std, ("NDWI", "MNDWI", "NDVI", "NDMI"))
    x = step(raw.clone(), clear)
    assert x.shape == (2, 10, 16, 16) and step.channels == 10
    for k, name in enumerate(step.indices):
        a, b = (raw[:, BANDS.index(band)] for band in INDICES[name])
        want = ((a - b) / (a + b)) * clear
        assert torch.allclose(x[:, 6 + k], want, atol=1e-6), name
    assert torch.allclose(x[:, :6], ((raw - 2000) / 500) * clear.unsqueeze(1))


def test_hidden_pixels_enter_as_zero_in_every_channel() -> None:
    """No data (raw 0) and clouds: the band mean after normalisation and a neutral index."""
    raw, clear = raw_chip(1)
    raw[:, :, ~clear[0]] = 0
    step = InputStep(BANDS, np.full(6, 1500.0), np.full(6, 300.0), ("NDWI",))
    x = step(raw, clear)
    hidden = ~clear.unsqueeze(1).expand_as(x)
    assert (x[hidden] == 0).all() and (x[~hidden] != 0).any()


def test_the_clear_channel_tells_a_hidden_pixel_from_an_average_one() -> None:
    raw, clear = raw_chip(2)
    step = InputStep(BANDS, np.full(6, 1500.0), np.full(6, 300.0), ("NDWI",), clear_channel=True)
    x = step(raw, clear)
    assert step.names == [*BANDS, "NDWI", "clear"] and x.shape[1] == 8
    assert torch.equal(x[:, 7], clear.float())


def test_an_index_needs_its_bands() -> None:
    data = {"data": {"chips": "c", "bands": ["B02", "B03", "B04"]}, "model": {"indices": ["ndwi"]}}
    with pytest.raises(WetmapError, match="NDWI needs band"):
        config.build(config.TrainRunConfig, data)
    with pytest.raises(WetmapError, match="unknown index 'NDXI'"):
        config.build(config.TrainRunConfig, {"data": {"chips": "c"}, "model": {"indices": ["NDXI"]}})
    cfg = config.build(config.TrainRunConfig, {"data": {"chips": "c"}, "model": {"indices": ["ndwi", "Mndwi"]}})
    assert cfg.model.indices == ["NDWI", "MNDWI"]


def test_a_state_dict_maps_its_first_layer_by_band_name(tmp_path: Path) -> None:
    """A 13-band Sentinel-2 encoder (TorchGeo's SSL4EO-S12 layout: a timm ResNet-18 state
    dict): each of the model's bands takes the filter of the same band, not of the same position."""
    import timm

    source = timm.create_model("resnet18", in_chans=13, num_classes=0).state_dict()
    path = tmp_path / "ssl4eo.pth"
    torch.save(source, path)
    model_cfg = config.ModelConfig(indices=["NDWI"])
    network = build_network(model_cfg, 7)
    decoder_before = {k: v.clone() for k, v in network.state_dict().items() if k.startswith("decoder.")}
    pre = read_weights(path)
    assert pre.bands == S2_L1C
    report = apply_weights(network, pre, [*BANDS, "NDWI"], path)
    conv1 = network.state_dict()["encoder.conv1.weight"]
    for i, band in enumerate(BANDS):
        assert torch.equal(conv1[:, i], source["conv1.weight"][:, S2_L1C.index(band)]), band
    assert (conv1[:, 6] == 0).all()
    assert torch.equal(network.state_dict()["encoder.layer4.1.conv2.weight"], source["layer4.1.conv2.weight"])
    for key, value in decoder_before.items():   # an encoder's file leaves the decoder as it was
        assert torch.equal(network.state_dict()[key], value)
    assert report["bands_copied"] == list(BANDS) and report["channels_initialised"] == ["NDWI"]


def test_a_bundle_fine_tunes_with_its_bands_reordered_and_its_statistics(tmp_path: Path) -> None:
    model_cfg = config.ModelConfig()
    trained = build_network(model_cfg, 6)
    mean, std = np.arange(1.0, 7.0) * 100, np.arange(1.0, 7.0) * 10
    path = save_bundle(tmp_path / "model.pt", trained, model_cfg, list(BANDS), mean, std, {}, {}, {})
    order = ["B12", "B02", "B03", "B04", "B08", "B05"]   # B05: a band the bundle lacks
    network = build_network(model_cfg, 6)
    pre = read_weights(path)
    apply_weights(network, pre, order, path)
    src, dst = trained.state_dict(), network.state_dict()
    conv1 = dst["encoder.conv1.weight"]
    for i, band in enumerate(order[:5]):
        assert torch.equal(conv1[:, i], src["encoder.conv1.weight"][:, BANDS.index(band)])
    assert torch.allclose(conv1[:, 5], src["encoder.conv1.weight"].mean(1))
    assert all(torch.equal(dst[k], src[k]) for k in src if k != "encoder.conv1.weight")
    m, s = input_statistics(pre, order, np.zeros(6), np.ones(6))
    assert m.tolist() == [600, 100, 200, 300, 400, 0] and s.tolist() == [60, 10, 20, 30, 40, 1]


def test_weights_that_do_not_fit_are_one_line_errors(tmp_path: Path) -> None:
    import timm

    path = tmp_path / "r50.pth"
    torch.save(timm.create_model("resnet50", in_chans=13, num_classes=0).state_dict(), path)
    with pytest.raises(WetmapError, match="do not fit model.backbone"):
        apply_weights(build_network(config.ModelConfig(), 6), read_weights(path), list(BANDS), path)
    odd = tmp_path / "odd.pth"
    torch.save(timm.create_model("resnet18", in_chans=5, num_classes=0).state_dict(), odd)
    with pytest.raises(WetmapError, match="5 channels: name them with model.weights_bands"):
        read_weights(odd)
    assert read_weights(odd, ["B02", "B03", "B04", "B08", "B11"]).bands[-1] == "B11"
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WetmapError, match="not a weights file"):
        read_weights(tmp_path / "junk.pth")


def tiny_bundle() -> Bundle:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, (3, 5), padding=(1, 2)))
    return Bundle(model=net.eval(), bands=list(BANDS), classes=["other", "wetland"], mean=np.zeros(6), std=np.ones(6))


def test_dihedral_tta_is_invariant_to_the_views_it_averages() -> None:
    """Averaged over all eight views, a turned or mirrored tile gives the turned or mirrored
    probabilities; a single view of a network with no symmetry does not."""
    x = np.random.default_rng(0).random((1, 6, 32, 32), dtype=np.float32)
    ok = np.ones((1, 32, 32), bool)
    plain = TilePredictor(tiny_bundle(), torch.device("cpu"), "fp32")
    tta = TilePredictor(tiny_bundle(), torch.device("cpu"), "fp32", tta="dihedral")
    for turn in (lambda a: np.rot90(a, 1, (-2, -1)), lambda a: a[..., ::-1]):
        moved = np.ascontiguousarray(turn(x))
        assert np.allclose(tta(moved, ok), turn(tta(x.copy(), ok)), atol=1e-6)
        assert not np.allclose(plain(moved, ok), turn(plain(x.copy(), ok)), atol=1e-3)
    flips = TilePredictor(tiny_bundle(), torch.device("cpu"), "fp32", tta="flips")
    assert len(flips.views) == 4 and len(tta.views) == 8


def test_prediction_window_follows_the_training_chips() -> None:
    cfg = config.PredictConfig()
    assert (cfg.windows_for(32).tile_size, cfg.windows_for(32).overlap) == (32, 8)
    assert (cfg.windows_for(None).tile_size, cfg.windows_for(None).overlap) == (256, 64)
    chosen = config.PredictConfig(tile_size=512, overlap=32).windows_for(32)
    assert (chosen.tile_size, chosen.overlap) == (512, 32)
    with pytest.raises(WetmapError, match="less than half"):
        config.PredictConfig(overlap=40).windows_for(64)


def test_the_bundle_records_its_chip_size_and_indices(bundle_path: Path) -> None:
    from wetmap.model.bundle import load_bundle

    payload = torch.load(bundle_path, weights_only=True)
    assert payload["chip_size"] == 64
    bundle = load_bundle(bundle_path)
    assert bundle.chip_size == 64 and bundle.indices == ("NDWI", "MNDWI")
    assert bundle.inputs.channels == 8 and bundle.model(bundle.inputs(torch.ones(1, 6, 64, 64))).shape == (1, 1, 64, 64)


def test_raw_tiles_rescaled_where_the_model_runs_predict_as_the_harmonised_floats() -> None:
    """uint16 digital numbers with a scale and offset (Landsat's, in x 10000 units), some pixels
    hidden, through indices and the clear channel: exactly what the float32 reflectance gives."""
    from wetmap.scenes.reader import Rescale

    rng = np.random.default_rng(1)
    raw = rng.integers(7300, 30000, (3, 6, 32, 32)).astype(np.uint16)
    clear = rng.random((3, 32, 32)) > 0.2
    clear[1] = True   # a batch member wholly clear next to hidden ones
    rescale = Rescale(np.full(6, 0.275, np.float32), np.full(6, -2000.0, np.float32))
    harmonised = raw.astype(np.float32) * np.float32(0.275) + np.float32(-2000.0)
    harmonised[np.broadcast_to(~clear[:, None], harmonised.shape)] = 0   # as SceneReader.read leaves them
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(6 + 2 + 1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    bundle = Bundle(model=net.eval(), bands=list(BANDS), classes=["other", "wetland"], mean=np.full(6, 1500.0),
                    std=np.full(6, 700.0), indices=("NDWI", "NDVI"), clear_channel=True)
    predictor = TilePredictor(bundle, torch.device("cpu"), "fp32")
    want = predictor(harmonised, clear)
    got = predictor(raw, clear, rescale)
    assert np.array_equal(got, want)
    assert not np.array_equal(predictor(raw, clear), want), "the rescaling is applied, not skipped"
    # A wholly clear batch skips the mask (never sent): the same values as with a mask of ones.
    all_clear = np.ones_like(clear)
    x = torch.from_numpy(raw.astype(np.float32) * np.float32(0.275) + np.float32(-2000.0))
    with torch.inference_mode():
        masked = bundle.probabilities(net(bundle.inputs(x, torch.from_numpy(all_clear)))).numpy()
    assert np.array_equal(predictor(raw, all_clear, rescale), masked)


def test_statistics_moved_once_serve_training_after_prediction() -> None:
    """The normalisation's device copies are made outside inference mode, so a training step in
    the same process (the tests, a notebook) can still build its graph on them."""
    from wetmap.model.inputs import normalize

    mean, std = np.full(6, 321.0), np.full(6, 45.0)
    with torch.inference_mode():
        normalize(torch.ones(1, 6, 4, 4), mean, std)
    weight = torch.ones(6, 1, 1, requires_grad=True)
    (normalize(torch.ones(1, 6, 4, 4), mean, std) * weight).sum().backward()
    assert weight.grad is not None and torch.allclose(weight.grad, torch.full((6, 1, 1), 16 * (1 - 321) / 45))
