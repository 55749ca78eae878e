"""The server role: the Flower ServerApp, knowledge broadcast and SuperLink deployment material."""
