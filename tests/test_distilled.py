"""The DD1 student: built from a teacher, causal, flags data and noise, saves and loads."""

import pytest
import torch

from tests.conftest import tiny_transformer
from zoo.ar.distilled import DDTransformer


@pytest.fixture(scope="module")
def teacher():
    return tiny_transformer(class_dropout_prob=0.1)


def test_student_starts_from_the_teacher(teacher):
    student = DDTransformer.from_teacher(teacher, codebook_dim=4)
    for name in ("class_embedding", "blocks", "norm", "head"):
        theirs, ours = getattr(teacher, name).state_dict(), getattr(student.backbone, name).state_dict()
        assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    assert student.backbone.config.input_dim == 4 and student.backbone.config.class_dropout_prob == 0
    assert not hasattr(student.backbone, "token_embedding")


def test_outputs_are_causal_and_depend_on_the_data_flag(teacher):
    student = DDTransformer.from_teacher(teacher, codebook_dim=4).eval()
    x, labels = torch.randn(2, 16, 4), torch.tensor([1, 2])
    codes, logits = student(x, labels, num_data=0)
    assert codes.shape == (2, 16, 4) and logits.shape == (2, 16, 64) and codes.dtype == torch.float32
    later = x.clone()
    later[:, 9:] = torch.randn(2, 7, 4)
    codes2, logits2 = student(later, labels, num_data=0)
    torch.testing.assert_close(codes2[:, :9], codes[:, :9])  # token j sees inputs <= j only
    torch.testing.assert_close(logits2[:, :9], logits[:, :9])
    flagged, _ = student(x, labels, num_data=torch.tensor([0, 5]))
    torch.testing.assert_close(flagged[0], codes[0])
    assert not torch.allclose(flagged[1], codes[1])


def test_save_and_load(teacher, tmp_path):
    student = DDTransformer.from_teacher(teacher, codebook_dim=4).eval()
    student.save_pretrained(tmp_path / "dd")
    loaded = DDTransformer.from_pretrained(tmp_path / "dd").eval()
    x = torch.randn(1, 16, 4)
    torch.testing.assert_close(loaded(x, torch.tensor([3]), 4)[0], student(x, torch.tensor([3]), 4)[0])


def test_bad_inputs(teacher):
    student = DDTransformer.from_teacher(teacher, codebook_dim=4)
    with pytest.raises(ValueError, match="x must be"):
        student(torch.randn(1, 16, 5), torch.tensor([0]))
    with pytest.raises(ValueError, match="num_classes >= 1"):
        DDTransformer(backbone_config=dict(vocab_size=8, hidden_size=32, num_layers=1, num_heads=2, seq_len=4))
    with pytest.raises(ValueError, match="token model"):
        DDTransformer.from_teacher(DDTransformer.from_teacher(teacher, 4).backbone, 4)
