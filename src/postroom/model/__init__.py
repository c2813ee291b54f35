"""Records shared by the layers that make, store and deliver mail (below storage, above proto)."""
