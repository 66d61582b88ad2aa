"""Which images the privacy audit trains on and scores (src/ppreid/audit/scoring.py), on hand-made ids."""

import torch

from ppreid.audit.scoring import identity_halves, scored_indices


def test_identity_halves_split_identities_not_images():
    pids = torch.tensor([5, 5, 7, 7, 7, 9, 11, 11, 13, 13])  # 5 identities, 10 images
    train, scored = identity_halves(pids, seed=0)
    assert bool((train ^ scored).all())  # every image on exactly one side
    train_ids, scored_ids = set(pids[train].tolist()), set(pids[scored].tolist())
    assert not train_ids & scored_ids and train_ids | scored_ids == {5, 7, 9, 11, 13}
    assert len(train_ids) == 2  # floor(5 / 2) identities train
    again, _ = identity_halves(pids, seed=0)
    assert torch.equal(train, again)  # seeded: every audited model gets the same split
    assert any(not torch.equal(identity_halves(pids, seed=s)[0], train) for s in range(1, 6))


def test_scored_indices_cap_is_a_seeded_sorted_subset_of_the_members():
    members = torch.tensor([True, False, True, True, False, True, True, True])
    assert scored_indices(members, None, 0).tolist() == [0, 2, 3, 5, 6, 7]
    assert scored_indices(members, 10, 0).tolist() == [0, 2, 3, 5, 6, 7]
    capped = scored_indices(members, 3, 4)
    assert capped.numel() == 3 and capped.tolist() == sorted(capped.tolist())
    assert set(capped.tolist()) <= {0, 2, 3, 5, 6, 7}
    assert torch.equal(capped, scored_indices(members, 3, 4))
