"""Official network pickles: fixture equivalence, strict loading, and refusal of embedded code."""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import ModelError
from pipeline.models.stylegan2 import GeneratorConfig, build_generator, load_generator
from pipeline.models.stylegan2 import networks as nets
from pipeline.models.stylegan2.ops import fir_filter
from pipeline.models.stylegan2.safe_unpickle import RestrictedUnpickler

FIXTURE_KEYS = ("ws", "ws_psi07", "img_const", "img_none", "img_psi07_const", "img_given_noise")


@pytest.fixture(scope="module")
def fixture_G(sg2_fixture_dir):
    return load_generator(sg2_fixture_dir / "sg2ada_tiny32.pkl")


@pytest.fixture(scope="module")
def fixture_ref(sg2_fixture_dir):
    return dict(np.load(sg2_fixture_dir / "sg2ada_tiny32.npz"))


def _fixture_outputs(G, ref):
    z = torch.from_numpy(ref["z"])
    noise = {k[len("noise::"):-len(".noise_const")]: torch.from_numpy(v)[None, None]
             for k, v in ref.items() if k.startswith("noise::")}
    with torch.no_grad():
        ws = G.mapping(z)
        return {
            "ws": ws, "ws_psi07": G.mapping(z, psi=0.7),
            "img_const": G.synthesis(ws, noise="const"), "img_none": G.synthesis(ws, noise="none"),
            "img_psi07_const": G(z, psi=0.7), "img_given_noise": G.synthesis(ws, noise=noise),
        }


def test_fixture_reproduces_every_reference_array(fixture_G, fixture_ref):
    G = fixture_G
    assert (G.z_dim, G.w_dim, G.num_ws, G.img_resolution) == (32, 32, 8, 32)
    assert G.config.channel_base == 512 and G.config.channel_max == 32 and G.config.conv_clamp is None
    assert not G.training and G.mapping.w_avg.dtype == torch.float32
    got = _fixture_outputs(G, fixture_ref)
    for key in FIXTURE_KEYS:
        assert got[key].shape == fixture_ref[key].shape, key
        assert float(np.abs(got[key].numpy() - fixture_ref[key]).max()) < 1e-4, key
    # the variants really differ, so the comparison above is discriminating
    assert np.abs(fixture_ref["img_const"] - fixture_ref["img_none"]).max() > 1e-2
    assert np.abs(fixture_ref["img_const"] - fixture_ref["img_given_noise"]).max() > 1e-2


def test_fixture_gradients_reach_ws_and_noise(fixture_G, fixture_ref):
    ws = torch.from_numpy(fixture_ref["ws"]).clone().requires_grad_(True)
    noise = {n: torch.randn(1, 1, *s, generator=torch.Generator().manual_seed(i), requires_grad=True)
             for i, (n, s) in enumerate(fixture_G.synthesis.noise_shapes.items())}
    fixture_G.synthesis(ws, noise=noise).mean().backward()
    assert float(ws.grad.abs().sum()) > 0
    assert all(float(t.grad.abs().sum()) > 0 for t in noise.values())


# -- writing official-format pickles (the layout NVIDIA's persistence module produces) ----------

_REF_CLASS = {nets.Generator: "Generator", nets.MappingNetwork: "MappingNetwork",
              nets.SynthesisNetwork: "SynthesisNetwork", nets.SynthesisBlock: "SynthesisBlock",
              nets.SynthesisLayer: "SynthesisLayer", nets.ToRGBLayer: "ToRGBLayer",
              nets.FullyConnected: "FullyConnectedLayer", nets.ResidualShortcut: "Conv2dLayer"}


@pytest.fixture
def nvidia_names(monkeypatch):
    """Importable stand-ins for dnnlib.util.EasyDict and the persistence hook (for pickling only)."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - never called by our loader
        raise AssertionError("must not be called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    easy = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    util.EasyDict = easy
    for name, module in [("torch_utils", types.ModuleType("torch_utils")), ("torch_utils.persistence", persistence),
                         ("dnnlib", types.ModuleType("dnnlib")), ("dnnlib.util", util)]:
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=easy)


class _Persistent:
    def __init__(self, names, class_name, state, module_src="# removed"):
        self.names, self.class_name, self.state, self.module_src = names, class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=self.state)
        return self.names.reconstruct, (meta,)


def _record(names, module, config, init_kwargs=None, module_src="# removed"):
    params = collections.OrderedDict((k, torch.nn.Parameter(v.detach().clone()))
                                     for k, v in module._parameters.items())
    buffers = collections.OrderedDict((k, v.detach().clone()) for k, v in module._buffers.items()
                                      if k not in module._non_persistent_buffers_set)
    if isinstance(module, (nets.SynthesisLayer, nets.SynthesisBlock, nets.ResidualShortcut)):
        buffers["resample_filter"] = fir_filter(config.resample_filter)
    state = {"training": False, "_parameters": params, "_buffers": buffers, "_non_persistent_buffers_set": set(),
             "_modules": collections.OrderedDict((k, _record(names, m, config)) for k, m in module._modules.items())}
    if isinstance(module, nets.SynthesisLayer):
        state.update(conv_clamp=module.conv_clamp, up=module.up, use_noise=module.use_noise, activation="lrelu",
                     act_gain=np.float64(math.sqrt(2)))
    if isinstance(module, nets.FullyConnected):
        state.update(activation=module.activation, bias_gain=module.lr_multiplier,
                     weight_gain=np.float64(module.lr_multiplier / math.sqrt(module.weight.shape[1])))
    if isinstance(module, nets.MappingNetwork):
        state.update(num_layers=module.num_layers, w_avg_beta=config.w_avg_beta)
    if init_kwargs is not None:
        state["_init_kwargs"] = names.EasyDict(init_kwargs)
    return _Persistent(names, _REF_CLASS[type(module)], state, module_src)


def official_pickle(names, G, path: Path, flat=False, module_src="# removed", kwargs_patch=None):
    """Write G the way StyleGAN2-ADA (or with ``flat``, StyleGAN3's networks_stylegan2) pickles it."""
    c = G.config
    synthesis = dict(channel_base=c.channel_base, channel_max=c.channel_max, num_fp16_res=np.int64(c.num_fp16_res),
                     conv_clamp=c.conv_clamp, architecture=c.architecture.value)
    kw = dict(z_dim=c.z_dim, c_dim=0, w_dim=c.w_dim, img_resolution=c.img_resolution, img_channels=c.img_channels,
              mapping_kwargs=names.EasyDict(num_layers=c.mapping_layers, lr_multiplier=c.mapping_lr_multiplier))
    kw.update(synthesis if flat else {"synthesis_kwargs": names.EasyDict(synthesis)})
    kw.update(kwargs_patch or {})
    g_ema = _record(names, G, c, kw, module_src)
    path.write_bytes(pickle.dumps({"G": g_ema, "D": None, "G_ema": g_ema, "augment_pipe": None,
                                   "training_set_kwargs": names.EasyDict(resolution=c.img_resolution)}, protocol=4))
    return path


SMALL = dict(z_dim=8, w_dim=8, mapping_layers=2)


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("config", [
    GeneratorConfig(img_resolution=64, channel_base=256, channel_max=8, conv_clamp=0.5, **SMALL),
    GeneratorConfig(img_resolution=16, channel_base=64, channel_max=8, architecture="resnet", conv_clamp=256, **SMALL),
], ids=["res64-clamp", "resnet"])
def test_written_official_pickle_loads_identically(nvidia_names, tmp_path, config, flat):
    G = build_generator(config, seed=5)
    loaded = load_generator(official_pickle(nvidia_names, G, tmp_path / "net.pkl", flat=flat))
    assert loaded.config == config
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(z, psi=0.6, cutoff=2), G(z, psi=0.6, cutoff=2))


def test_module_src_is_never_executed(nvidia_names, tmp_path):
    marker = tmp_path / "module_src_ran"
    G = build_generator(GeneratorConfig(img_resolution=8, channel_base=32, channel_max=8, **SMALL), seed=1)
    src = f"open({str(marker)!r}, 'w').close()\nclass Generator: pass\n"
    loaded = load_generator(official_pickle(nvidia_names, G, tmp_path / "net.pkl", module_src=src))
    assert not marker.exists()
    assert torch.equal(loaded.synthesis.b8.conv0.weight, G.synthesis.b8.conv0.weight)


def test_strictness_errors_name_the_problem(nvidia_names, tmp_path):
    G = build_generator(GeneratorConfig(img_resolution=8, channel_base=32, channel_max=8, **SMALL), seed=1)
    with pytest.raises(ModelError, match="conditional"):
        load_generator(official_pickle(nvidia_names, G, tmp_path / "a.pkl", kwargs_patch={"c_dim": 10}))
    with pytest.raises(ModelError, match=r"unsupported generator arguments \['bogus'\]"):
        load_generator(official_pickle(nvidia_names, G, tmp_path / "b.pkl", kwargs_patch={"bogus": 1}))
    with pytest.raises(ModelError, match=r"'synthesis.b4.const' has shape \(8, 4, 4\), expected \(4, 4, 4\)"):  # wrong channel_max in kwargs
        load_generator(official_pickle(nvidia_names, G, tmp_path / "c.pkl", kwargs_patch={
            "synthesis_kwargs": nvidia_names.EasyDict(channel_base=32, channel_max=4, architecture="skip")}))
    G.synthesis.b8.conv1.conv_clamp = 3.0  # layer attribute contradicts the init kwargs
    with pytest.raises(ModelError, match="b8.conv1.conv_clamp is 3.0"):
        load_generator(official_pickle(nvidia_names, G, tmp_path / "d.pkl"))
    G.synthesis.b8.conv1.conv_clamp = None
    G.synthesis.b8.conv1.register_buffer("stray", torch.zeros(2))
    with pytest.raises(ModelError, match=r"unexpected \['synthesis.b8.conv1.stray'\]"):
        load_generator(official_pickle(nvidia_names, G, tmp_path / "e.pkl"))
    del G.synthesis.b8.conv1.stray
    del G.synthesis.b8.conv1._parameters["bias"]
    with pytest.raises(ModelError, match=r"missing \['synthesis.b8.conv1.bias'\]"):
        load_generator(official_pickle(nvidia_names, G, tmp_path / "f.pkl"))


# -- malicious pickles ----------------------------------------------------------------------


class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _assert_refused(path: Path, global_name: str, marker: Path):
    with pytest.raises(ModelError, match=f"refusing to load global '{global_name}' from network pickle"):
        load_generator(path)
    assert not marker.exists()


def test_refuses_os_system_global(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    _assert_refused(path, "os.system", marker)


@pytest.mark.parametrize("func", [os.system, exec], ids=["system", "exec"])
def test_refuses_reduce_payloads(tmp_path, func):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').close()"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Payload(func, arg)}))
    _assert_refused(path, f"{func.__module__}.{func.__name__}", marker)


def test_refuses_eval_inside_persistent_state(nvidia_names, tmp_path):
    marker = tmp_path / "pwned"
    G = build_generator(GeneratorConfig(img_resolution=4, channel_base=16, channel_max=4, **SMALL), seed=1)
    path = official_pickle(nvidia_names, G, tmp_path / "evil.pkl", kwargs_patch={
        "z_dim": _Payload(eval, f"open({str(marker)!r}, 'w').close() or 8")})
    _assert_refused(path, "builtins.eval", marker)


def test_refuses_code_inside_storage_bytes(tmp_path):
    marker = tmp_path / "pwned"
    inner = pickle.dumps(_Payload(os.system, f"touch {marker}"), protocol=2)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Payload(torch.storage._load_from_bytes, inner)}))
    with pytest.raises(ModelError, match="unreadable tensor storage"):
        load_generator(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_unpickler_reads_the_plain_data_such_files_hold(protocol):
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = {"a": array, "f": np.asfortranarray(array), "s": np.float64(2.5), "i": np.int64(3),
            "t": torch.arange(5.0)[1:4], "p": torch.nn.Parameter(torch.ones(2, 2)),
            "o": collections.OrderedDict(x=1), "b": b"\x00\xff"}
    got = RestrictedUnpickler(io.BytesIO(pickle.dumps(data, protocol=protocol))).load()
    assert np.array_equal(got["a"], array) and np.array_equal(got["f"], array)
    assert got["s"] == 2.5 and isinstance(got["s"], np.float64) and got["i"] == 3
    assert torch.equal(got["t"], torch.tensor([1.0, 2.0, 3.0]))
    assert isinstance(got["p"], torch.nn.Parameter) and torch.equal(got["p"], torch.ones(2, 2))
    assert got["o"] == {"x": 1} and got["b"] == b"\x00\xff"
