"""Parity with Hugging Face transformers' Mamba, an implementation no one here wrote."""

import pytest
import torch

from sigerlm.model.backbone import Backbone
from sigerlm.model.config import SigerConfig
from sigerlm_text.hf import ConversionError, from_hf, to_hf

pytest.importorskip("transformers", reason="transformers is a test dependency (sigerlm-text[test])")

VOCAB = 50


def random_model(**overrides):
    torch.manual_seed(0)
    config = SigerConfig.from_profile("tiny", **overrides)
    model = Backbone(config).eval()
    with torch.no_grad():  # move away from the initialisation so every tensor matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model, torch.randn(VOCAB, config.d_model) * 0.5


def logits(backbone, embedding, ids):
    return backbone.forward_hidden(embedding[ids]) @ embedding.t()


def test_siger_to_transformers_full_and_step_by_step():
    backbone, embedding = random_model()
    hf = to_hf(backbone, embedding)
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = logits(backbone, embedding, ids)
        assert (hf(ids).logits - ours).abs().max() <= 1e-4
        out = hf(ids[:, :1], use_cache=True)
        steps = [out.logits]
        for t in range(1, ids.shape[1]):
            out = hf(ids[:, t : t + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits)
        assert (torch.cat(steps, 1) - ours).abs().max() <= 1e-4
        # and our own decode against transformers' full forward
        state = backbone.init_state(2)
        ours_steps = []
        for t in range(ids.shape[1]):
            y, state = backbone.step(embedding[ids[:, t]], state)
            ours_steps.append(y @ embedding.t())
        assert (torch.stack(ours_steps, 1) - hf(ids).logits).abs().max() <= 1e-4


def test_transformers_to_siger():
    from transformers import MambaForCausalLM

    backbone, embedding = random_model()
    hf_config = to_hf(backbone, embedding).config
    torch.manual_seed(3)
    hf = MambaForCausalLM(hf_config).eval()  # weights no SigerLM code produced
    converted, hf_embedding = from_hf(hf)
    ids = torch.randint(0, VOCAB, (3, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (logits(converted.eval(), hf_embedding, ids) - hf(ids).logits).abs().max() <= 1e-4
        back = to_hf(converted, hf_embedding)
        assert (back(ids).logits - hf(ids).logits).abs().max() == 0


def test_what_transformers_cannot_express_is_refused():
    backbone, embedding = random_model(norm_type="layernorm")
    with pytest.raises(ConversionError, match="uses RMSNorm; this model uses layernorm"):
        to_hf(backbone, embedding)
