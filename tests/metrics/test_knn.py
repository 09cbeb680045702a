"""Exact k nearest neighbours (siamese.metrics.knn): torch and faiss agree."""

import torch

from siamese.metrics.knn import nearest


def test_torch_and_faiss_find_the_same_neighbours():
    gallery = torch.nn.functional.normalize(torch.randn(500, 64, generator=torch.Generator().manual_seed(0)), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(40, 64, generator=torch.Generator().manual_seed(1)), dim=1)
    d_torch, r_torch = nearest(gallery, queries, 8, "torch")
    d_faiss, r_faiss = nearest(gallery, queries, 8, "faiss")
    assert torch.equal(r_torch, r_faiss)
    assert torch.allclose(d_torch, d_faiss, atol=1e-4)
