"""intsim: a bit-accurate integer inference engine for quantized audio source separation."""

from intsim.executor import Model, load
from intsim.ir import Graph, GraphError, Node, Quant, TensorSpec
from intsim.modelfile import ModelFileError
from intsim.ops import OPS, OpError
from intsim.profile import PROFILES, Profile, ProfileError, get_profile

__version__ = "0.1.0"

__all__ = ["Model", "load", "Graph", "Node", "TensorSpec", "Quant", "GraphError", "ModelFileError", "OPS",
           "OpError", "PROFILES", "Profile", "ProfileError", "get_profile", "__version__"]
