import torch
from torch import nn

from indexer.models.attributes.heads import CnnRnnHead, PlainHead, deepmar_weights, weighted_bce


def _maps(b: int = 4) -> torch.Tensor:
    return torch.randn(b, 8, 4, 2, generator=torch.Generator().manual_seed(0))


def test_deepmar_weights() -> None:
    ratio = torch.tensor([0.1, 0.5])
    w = deepmar_weights(torch.tensor([[1.0, 0.0]]), ratio)
    torch.testing.assert_close(w, torch.tensor([[torch.e ** 0.9, torch.e ** 0.5]]))
    loss = weighted_bce(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), ratio)
    assert abs(loss.item() - (torch.e ** 0.9 + torch.e ** 0.5) * 0.6931) < 1e-3


def test_plain_head_shape() -> None:
    assert PlainHead(7, nn.Identity(), in_channels=8).eval()(_maps()).shape == (4, 7)


def test_sequences_follow_frequency_order() -> None:
    head = CnnRnnHead(4, order=torch.tensor([2, 0, 3, 1]), head_conv=nn.Identity(), in_channels=8)
    seq, mask = head.sequences(torch.tensor([[1.0, 1, 1, 0], [0, 0, 0, 0]]))
    assert seq.tolist() == [[2, 0, 1, 4], [4, 4, 4, 4]]
    assert mask.tolist() == [[True] * 4, [True, False, False, False]]


def test_cnn_rnn_loss_and_beam_search_shapes() -> None:
    torch.manual_seed(0)
    head = CnnRnnHead(5, order=torch.arange(5), dim=16, hidden=16, head_conv=nn.Identity(), in_channels=8)
    targets = torch.tensor([[1.0, 0, 1, 0, 0]] * 4)
    loss = head.loss(_maps(), targets, torch.full((5,), 0.3))
    loss.backward()
    assert torch.isfinite(loss)
    head.eval()
    decoded = head.beam_search(_maps(), beam=3)
    assert decoded.shape == (4, 5) and set(decoded.unique().tolist()) <= {0, 1}
    assert head(_maps()).shape == (4, 5)


def test_beam_search_learns_a_fixed_set() -> None:
    """After fitting one label set, beam search decodes exactly that set (greedy and beam)."""
    torch.manual_seed(0)
    head = CnnRnnHead(6, order=torch.arange(6), dim=16, hidden=32, dropout=0.0,
                      head_conv=nn.Identity(), in_channels=8)
    maps = _maps(8)
    targets = torch.tensor([[0.0, 1, 0, 1, 1, 0]] * 8)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        head.loss(maps, targets, torch.full((6,), 0.5)).backward()
        opt.step()
    head.eval()
    for beam in (1, 3):
        assert head.beam_search(maps, beam=beam).tolist() == targets.int().tolist()
