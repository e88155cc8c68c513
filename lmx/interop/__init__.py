"""Import and export of lmx models to and from other libraries (Hugging Face transformers).

torch and transformers are imported inside the functions, so `import lmx.interop` works without them.
"""

from lmx.interop.hf_llama import (
    check_llama_compatible,
    from_hf_llama,
    from_hf_llama_config,
    to_hf_llama,
    to_hf_llama_config,
    to_hf_state_dict,
)

__all__ = ["check_llama_compatible", "from_hf_llama", "from_hf_llama_config", "to_hf_llama", "to_hf_llama_config", "to_hf_state_dict"]
