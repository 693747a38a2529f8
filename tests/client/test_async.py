"""AsyncClient against a real server: streams, collection admin, latents and maps answer as the sync client does."""

import asyncio

import numpy as np

from embedsvc.client import AsyncClient, word_points


def test_async_streams_and_admin_match_the_sync_client(target, client):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(25, 8)).astype(np.float32)
    ids = [f"a{i}" for i in range(25)]
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a bar: a crude 1

    async def main():
        async with AsyncClient(target) as c:
            await c.create_collection("async-parity", dimension=8, metric="l2")
            try:
                progress = []
                streamed = await c.upsert_stream("async-parity", ids, vectors, batch_size=10, progress=progress.append)
                exported = [item async for item in c.export_items("async-parity", batch_size=7)]
                info = await c.get_collection("async-parity")
                hits = await c.search("async-parity", vector=vectors[3], k=1)
                listed = [i.name for i in await c.list_collections()]
            finally:
                await c.delete_collection("async-parity")
            frames = await c.interpolate("mnist-vae", digit, digit.T.copy(), steps=4)
            texts = await c.embed_texts_stream("minilm", ["one", "two", "three"], batch_size=2)
            projection = await c.project(word_points("planted", ["king", "queen", "man", "woman"]))
            decoded = await c.decode_latents("mnist-vae", expressions=[[digit]])
            return streamed, progress, exported, info, hits, listed, frames, texts, projection, decoded

    streamed, progress, exported, info, hits, listed, frames, texts, projection, decoded = asyncio.run(main())
    assert (streamed.upserted, streamed.batches, streamed.count) == (25, 3, 25) and progress == [10, 10, 5]
    assert sorted(i["id"] for i in exported) == sorted(ids)
    assert info.count == 25 and hits[0].id == "a3" and "async-parity" in listed
    assert len(frames) == 4 and all(f.png.startswith(b"\x89PNG") for f in frames)
    sync_frames = client.interpolate("mnist-vae", digit, digit.T.copy(), steps=4)
    assert [f.png for f in frames] == [f.png for f in sync_frames]
    np.testing.assert_allclose(texts.vectors, client.embed_texts("minilm", ["one", "two", "three"]).vectors, atol=1e-6)
    assert projection.coordinates.shape == (4, 2)
    np.testing.assert_allclose(decoded[0].latent, client.encode_images("mnist-vae", [digit])[0][0], atol=1e-5)
