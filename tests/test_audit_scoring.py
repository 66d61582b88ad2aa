"""Which images the privacy audit trains on and scores (src/ppreid/audit/scoring.py, suite_training.py), on
hand-made ids: identity and image halves, the scored cap, swap partners, held-out images, person masks."""

import numpy as np
import torch
from PIL import Image

from ppreid.audit.scoring import identity_halves, image_halves, load_masks, scored_indices, swap_partners
from ppreid.audit.suite_training import held_out_split


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


def test_swap_partners_are_other_images_of_the_same_identity_among_the_members():
    pids = torch.tensor([5, 5, 5, 7, 7, 9, 9])
    members = torch.tensor([True, True, True, True, True, True, False])
    queries = torch.tensor([0, 2, 3, 5])
    partners = swap_partners(pids, queries, members, seed=0)
    for q, j in zip(queries.tolist(), partners.tolist()):
        if pids[q] == 9:
            assert j == -1  # its other image is not a member
        else:
            assert j != q and pids[j] == pids[q] and bool(members[j])
    assert partners[2] == 4  # identity 7: its only other image
    assert torch.equal(partners, swap_partners(pids, queries, members, seed=0))


def test_held_out_images_take_their_mirrors_along():
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9])  # 10 images and their mirrors
    held = held_out_split(ids, 0.2, seed=0)
    assert int(held.sum()) == 4 and len(set(ids[held].tolist())) == 2
    assert not set(ids[held].tolist()) & set(ids[~held].tolist())
    assert not held_out_split(ids, 0.0, seed=0).any() and not held_out_split(ids[:6], 0.5, seed=0).any()


def test_image_halves_split_images():
    train, test = image_halves(7, seed=3)
    assert int(train.sum()) == 3 and bool((train ^ test).all())
    assert torch.equal(train, image_halves(7, seed=3)[0])


def test_masks_are_read_at_the_attack_size(tmp_path):
    """A 32x16 PNG whose left half is the person (255) -> bool (1,1,16,8) at half the size, left half True."""
    mask = np.zeros((32, 16), np.uint8)
    mask[:, :8] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = load_masks([str(tmp_path / "m.png")], (16, 8))
    assert out.shape == (1, 1, 16, 8) and out.dtype == torch.bool
    assert bool(out[..., :4].all()) and not bool(out[..., 4:].any())
