"""The edge role: the Flower ClientApp and SuperNode deployment material."""
