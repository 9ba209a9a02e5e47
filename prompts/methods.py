"""Imports every method module so that each one registers itself in spp.prompts.base.METHODS.

spp.prompts.base._ensure_loaded() imports this module lazily; a new method module needs one
import line here.
"""

from spp.prompts import ept  # noqa: F401
from spp.prompts import ptuning  # noqa: F401
from spp.prompts import residual  # noqa: F401
from spp.prompts import simple  # noqa: F401
from spp.prompts import superpos  # noqa: F401
from spp.prompts import attempt  # noqa: F401
