"""`cartd decode`: read a KDNET capture (or cartd's own serial `wire.pcapng`) offline.

Modules, in the order data flows through them:

- `reader`: pcap/pcapng files through scapy -> `UdpDatagram` / `SerialChunk` records, and the
  `CaptureError` a bad file raises;
- `kdnet`: `KdnetFollower`, which follows handshakes per target, derives each session's data
  key as the host does, and decrypts every datagram it can (`KdnetRecord`);
- `serial`: `SerialFollower`, which reframes a serial link's byte chunks into KD packets;
- `describe`: the one-line meaning of a KD packet (`describe_packet`);
- `summary`: the counts at the end; `output`: text lines and JSON objects;
- `decoder`: `CaptureDecoder`, the pieces joined; `command`: the CLI.

Nothing here imports scapy until a capture is opened through `decoder` or `reader`.
"""
