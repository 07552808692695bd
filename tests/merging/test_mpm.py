"""MPM against a straightforward reference loop."""

from __future__ import annotations

import pytest
import torch

from mpm.merging import compose, mpm_merge, unmerge
from mpm.merging.mpm import best_partners, keep_top_pairs, mutual_pairs, partner_cosines


def reference_mpm(x: torch.Tensor) -> tuple[torch.Tensor, list[int], list[tuple[int, int]]]:
    """One image (N, C): merged (M, C), map (N,), and the mutual pairs, by plain loops."""
    n = x.shape[0]
    norms = [x[i] / x[i].norm() for i in range(n)]
    best = []
    for i in range(n):
        top, arg = None, None
        for j in range(n):
            if j == i:
                continue
            s = float(norms[i] @ norms[j])
            if top is None or s > top:
                top, arg = s, j
        best.append(arg)
    pairs = [(i, best[i]) for i in range(n) if best[i] is not None and i < best[i] and best[best[i]] == i]
    partner = {}
    for i, j in pairs:
        partner[i], partner[j] = j, i
    survivors = [i for i in range(n) if not (i in partner and partner[i] < i)]
    slot = {s: k for k, s in enumerate(survivors)}
    merged = torch.stack([(x[s] + x[partner[s]]) / 2 if s in partner else x[s] for s in survivors])
    index = [slot[min(i, partner[i])] if i in partner else slot[i] for i in range(n)]
    return merged, index, pairs


@pytest.mark.parametrize("n", [2, 3, 5, 8, 17, 64, 100])
@pytest.mark.parametrize("c", [4, 32])
def test_matches_reference_loop(n: int, c: int) -> None:
    g = torch.Generator().manual_seed(1000 * n + c)
    x = torch.randn(1, n, c, generator=g, dtype=torch.float64)
    merged, index = mpm_merge(x)
    ref_merged, ref_index, pairs = reference_mpm(x[0])
    assert index.dtype == torch.long and index.shape == (1, n)
    assert index[0].tolist() == ref_index
    assert merged.shape == (1, n - len(pairs), c)
    torch.testing.assert_close(merged[0], ref_merged, rtol=0, atol=1e-12)
    # at most half removed; every merged token indexed
    assert merged.shape[1] >= (n + 1) // 2
    assert set(index[0].tolist()) == set(range(merged.shape[1]))
    # merged[index[i]] is the token i went into
    for i, j in pairs:
        assert index[0, i] == index[0, j]
        torch.testing.assert_close(merged[0, index[0, i]], (x[0, i] + x[0, j]) / 2, rtol=0, atol=1e-12)


def test_unpaired_tokens_untouched_and_order_kept() -> None:
    x = torch.randn(1, 50, 16, generator=torch.Generator().manual_seed(3))
    merged, index = mpm_merge(x)
    counts = torch.bincount(index[0], minlength=merged.shape[1])
    singles = (counts[index[0]] == 1).nonzero().flatten()
    assert len(singles) > 0
    for i in singles.tolist():
        assert torch.equal(merged[0, index[0, i]], x[0, i])  # bit for bit
    # survivors keep raster order: the map is non-decreasing on each token's first appearance
    first = [index[0, i].item() for i in range(50) if index[0, :i].ne(index[0, i]).all()]
    assert first == sorted(first) == list(range(merged.shape[1]))


def test_designed_pairs() -> None:
    # tokens 0/3 and 1/2 are near-duplicates; 4 is alone (its best is 3, whose best is 0)
    x = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.05], [1.0, 0.05, 0.0], [1.0, 0.0, 1.0]]])
    merged, index = mpm_merge(x)
    assert index[0].tolist() == [0, 1, 1, 0, 2]
    torch.testing.assert_close(merged[0, 0], (x[0, 0] + x[0, 3]) / 2)
    torch.testing.assert_close(merged[0, 1], (x[0, 1] + x[0, 2]) / 2)
    assert torch.equal(merged[0, 2], x[0, 4])


def test_single_token_and_identical_tokens() -> None:
    one = torch.randn(1, 1, 8)
    merged, index = mpm_merge(one)
    assert torch.equal(merged, one) and index.tolist() == [[0]]
    same = torch.ones(1, 4, 8)  # all ties: first index wins -> 0<->1 mutual, 2->0 not mutual, 3->0
    merged, index = mpm_merge(same)
    assert merged.shape[1] == 3 and index[0].tolist() == [0, 0, 1, 2]


def test_composed_maps_match_step_by_step_reference() -> None:
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(1, 96, 12, generator=g, dtype=torch.float64)
    x, total = x0, None
    owner = list(range(96))  # reference: which current token each original token is in
    for step in range(4):
        x_new, index = mpm_merge(x)
        _, ref_index, _ = reference_mpm(x[0])
        owner = [ref_index[o] for o in owner]
        total = index if total is None else compose(total, index)
        assert total[0].tolist() == owner
        # some transformation between merges, like a block would do
        x = torch.tanh(x_new * 1.3 + 0.1 * step)
        assert x.shape[1] >= 96 / 2 ** (step + 1)
    restored = unmerge(x, total)
    expected = torch.stack([x[0, o] for o in owner])[None]
    assert torch.equal(restored, expected)


def test_batch_exact_equals_per_image() -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(5, 60, 8, generator=g)
    merged, index, lengths = mpm_merge(x, return_lengths=True)
    assert lengths is not None and len(set(lengths.tolist())) > 1
    for b in range(5):
        alone, alone_index = mpm_merge(x[b : b + 1])
        m = alone.shape[1]
        assert lengths[b] == m
        assert torch.equal(merged[b, :m], alone[0])
        assert torch.equal(index[b], alone_index[0])


def test_batch_exact_on_padded_input_equals_per_image() -> None:
    # a second insertion on a padded batch: padding never pairs with real tokens
    g = torch.Generator().manual_seed(12)
    x = torch.randn(4, 70, 8, generator=g)
    first, _, lengths = mpm_merge(x, return_lengths=True)
    first = first + 1000.0 * (torch.arange(first.shape[1]) >= lengths[:, None])[..., None]  # garbage padding
    second, index, lengths2 = mpm_merge(first, lengths, return_lengths=True)
    for b in range(4):
        alone, alone_index = mpm_merge(first[b : b + 1, : lengths[b]])
        m = alone.shape[1]
        assert int((lengths2 if lengths2 is not None else torch.full((4,), second.shape[1]))[b]) == m
        assert torch.equal(second[b, :m], alone[0])
        assert torch.equal(index[b, : lengths[b]], alone_index[0])


def test_batch_min_policy() -> None:
    g = torch.Generator().manual_seed(13)
    x = torch.randn(4, 64, 8, generator=g)
    merged, index = mpm_merge(x, policy="batch-min")
    _, _, exact_lengths = mpm_merge(x, return_lengths=True)
    assert merged.shape[1] == int(exact_lengths.max())  # fewest pairs -> most tokens
    for b in range(4):
        assert set(index[b].tolist()) == set(range(merged.shape[1]))
    # kept pairs are each image's most similar mutual pairs
    best, score = best_partners(x)
    mutual = mutual_pairs(best, score)
    k = int((mutual.sum(1) // 2).min())
    kept = keep_top_pairs(mutual, best, score, torch.full((4,), k))
    assert torch.equal(kept.sum(1), torch.full((4,), 2 * k))
    assert not (kept & ~mutual).any()
    for b in range(4):
        lead = mutual[b] & (torch.arange(64) < best[b])
        kept_scores = score[b][kept[b] & lead]
        dropped_scores = score[b][~kept[b] & lead]
        if len(dropped_scores):
            assert kept_scores.min() >= dropped_scores.max()


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        mpm_merge(torch.randn(10, 4))
    with pytest.raises(ValueError, match="policy"):
        mpm_merge(torch.randn(1, 10, 4), policy="pad-all")


def test_partner_cosines_check_a_choice_against_the_row_maximum() -> None:
    """The fast paths' check: the reference partners attain the maximum, another choice falls short."""
    torch.manual_seed(3)
    x = torch.randn(2, 30, 16)
    lengths = torch.tensor([30, 1])
    best, score = best_partners(x, lengths)
    top, chosen, valid = partner_cosines(x, best, lengths)
    assert valid.tolist()[1] == [True] + [False] * 29
    assert torch.allclose(top[0], chosen[0]) and torch.allclose(top[0], score[0].double(), atol=1e-6)
    assert torch.isneginf(top[1, 0])  # a token alone has no partner
    wrong = best.clone()
    wrong[0, 4] = (best[0, 4] + 1) % 30  # another token (or itself: -inf), never the best
    top_w, chosen_w, _ = partner_cosines(x, wrong, lengths)
    assert (top_w - chosen_w)[0, 4] > 0 and torch.equal(top_w, top)
