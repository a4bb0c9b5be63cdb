"""Pure-PyTorch StyleGAN2 generator (NVIDIA StyleGAN2-ADA-PyTorch semantics) and safe loaders.

>>> G = load_generator("ffhq.pkl")            # or .pt (rosinality) / .safetensors (ours)
>>> ws = G.mapping(z, psi=0.7)                 # [N, num_ws, w_dim]
>>> img = G.synthesis(ws, noise="const")       # [N, 3, R, R], roughly [-1, 1]
>>> fast = G.synthesis(ws, impl=SynthesisImpl(conv_form="auto", fir="depthwise"))  # same image, other rounding
"""

from pipeline.models.stylegan2.config import Architecture, GeneratorConfig
from pipeline.models.stylegan2.export import save_generator
from pipeline.models.stylegan2.factory import build_generator, load_generator
from pipeline.models.stylegan2.networks import Generator, MappingNetwork, SynthesisImpl, SynthesisNetwork
from pipeline.models.stylegan2.rosinality import to_rosinality_checkpoint, to_rosinality_state_dict

__all__ = [
    "Architecture",
    "Generator",
    "GeneratorConfig",
    "MappingNetwork",
    "SynthesisImpl",
    "SynthesisNetwork",
    "build_generator",
    "load_generator",
    "save_generator",
    "to_rosinality_checkpoint",
    "to_rosinality_state_dict",
]
