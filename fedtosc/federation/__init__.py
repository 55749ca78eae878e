"""The federation glue: what the ServerApp (server/) and the ClientApp (clients/) share.

`messages` names the queries and carries the config; `payloads` turns a knowledge slice into a
message and back; `weighting` is the SNR-aware aggregation weight; `node` is a node's identity
and its per-actor experiment cache; `node_data` assembles a node's training data;
`client_round` is one client's round of local training; `wire` is the dtype the student's arrays
travel in, both ways (`federation.wire_dtype`).
"""
