"""Eq. 3 on a video DiT's token sequence (frames' tokens frame-major, full attention across frames)."""
import pytest
import torch

from motion_core.attention import sequence_motion_inputs

FRAMES, POSITIONS, WIDTH, PREFIX = 3, 4, 8, 2


def _tokens(seed=0, extra=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, PREFIX + FRAMES * POSITIONS + extra, WIDTH, generator=generator)


def test_zero_embeddings_leave_every_token_bit_identical():
    tokens = _tokens()
    qk_input, value_input = sequence_motion_inputs(tokens, torch.zeros(1, FRAMES, WIDTH),
                                                   torch.zeros(POSITIONS, FRAMES, WIDTH), FRAMES, POSITIONS, PREFIX)
    assert torch.equal(qk_input, tokens) and torch.equal(value_input, tokens)


def test_a_frames_query_key_embedding_reaches_only_that_frames_tokens():
    tokens = _tokens(extra=3)
    qk = torch.zeros(1, FRAMES, WIDTH)
    qk[0, 1] = 1.0
    qk_input, value_input = sequence_motion_inputs(tokens, qk, None, FRAMES, POSITIONS, PREFIX)
    changed = (qk_input != tokens).any(-1).any(0).nonzero().flatten().tolist()
    assert changed == list(range(PREFIX + POSITIONS, PREFIX + 2 * POSITIONS))   # frame 1's tokens, nothing else
    assert torch.equal(value_input, tokens)


def test_a_value_entry_lands_on_its_frame_and_position():
    tokens = _tokens()
    value = torch.zeros(POSITIONS, FRAMES, WIDTH)
    value[3, 2] = 5.0                                   # position 3 of frame 2
    qk_input, value_input = sequence_motion_inputs(tokens, torch.zeros(1, FRAMES, WIDTH), value, FRAMES,
                                                   POSITIONS, PREFIX)
    changed = (value_input != tokens).any(-1).any(0).nonzero().flatten().tolist()
    assert changed == [PREFIX + 2 * POSITIONS + 3] and torch.equal(qk_input, tokens)


def test_full_attention_with_the_inputs_equals_eq3_written_per_token():
    """softmax(Wq(x+m_qk[f(i)]) Wk(x+m_qk[f(j)])^T) Wv(x+m_v[s(j),f(j)]) over every token pair."""
    torch.manual_seed(1)
    to_q, to_k, to_v = (torch.nn.Linear(WIDTH, WIDTH) for _ in range(3))
    tokens = _tokens(seed=2)[:, PREFIX:]
    qk, value = torch.randn(1, FRAMES, WIDTH), torch.randn(POSITIONS, FRAMES, WIDTH)
    qk_input, value_input = sequence_motion_inputs(tokens, qk, value, FRAMES, POSITIONS)
    weights = torch.softmax(to_q(qk_input) @ to_k(qk_input).transpose(1, 2) / WIDTH ** 0.5, -1)
    patched = weights @ to_v(value_input)
    frame = [i // POSITIONS for i in range(FRAMES * POSITIONS)]
    position = [i % POSITIONS for i in range(FRAMES * POSITIONS)]
    q = torch.stack([to_q(tokens[:, i] + qk[0, frame[i]]) for i in range(tokens.shape[1])], 1)
    k = torch.stack([to_k(tokens[:, i] + qk[0, frame[i]]) for i in range(tokens.shape[1])], 1)
    v = torch.stack([to_v(tokens[:, i] + value[position[i], frame[i]]) for i in range(tokens.shape[1])], 1)
    reference = torch.softmax(q @ k.transpose(1, 2) / WIDTH ** 0.5, -1) @ v
    assert torch.allclose(patched, reference, atol=1e-5)


def test_gradients_reach_both_embeddings():
    tokens = _tokens()
    qk = torch.zeros(1, FRAMES, WIDTH, requires_grad=True)
    value = torch.zeros(POSITIONS, FRAMES, WIDTH, requires_grad=True)
    qk_input, value_input = sequence_motion_inputs(tokens, qk, value, FRAMES, POSITIONS, PREFIX)
    (qk_input.pow(2).sum() + value_input.pow(3).sum()).backward()
    assert float(qk.grad.abs().min()) > 0 and float(value.grad.abs().min()) > 0


@pytest.mark.parametrize("qk_frames, value_shape, message", [
    (FRAMES + 1, None, "resample the embedding"),
    (FRAMES, (POSITIONS + 1, FRAMES, WIDTH), "resize it to this latent size"),
])
def test_mismatched_embeddings_are_refused_with_the_fix(qk_frames, value_shape, message):
    value = None if value_shape is None else torch.zeros(value_shape)
    with pytest.raises(ValueError, match=message):
        sequence_motion_inputs(_tokens(), torch.zeros(1, qk_frames, WIDTH), value, FRAMES, POSITIONS, PREFIX)


def test_too_few_tokens_are_refused():
    with pytest.raises(ValueError, match="fewer than"):
        sequence_motion_inputs(_tokens()[:, :5], torch.zeros(1, FRAMES, WIDTH), None, FRAMES, POSITIONS, PREFIX)
