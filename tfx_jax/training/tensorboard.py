"""A dependency-free TensorBoard scalar writer (TFRecord-framed Event protos).

tensorboardX imports torch when it is installed, and TensorFlow's writer needs
TensorFlow; scalars need neither, so we write the few protobuf fields by hand.
The tensorboard package's `tensorboard.summary.Writer` (tried: it writes scalars
without TensorFlow) stays out: it is marked experimental, would make grpcio,
werkzeug and protobuf core dependencies, and writes gs:// through its fsspec
stub as one open upload that becomes an object only on close, so a preempted
VM loses the log; this writer goes through `files`, like every other output.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from tfx_jax import files


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    byte, value = value & 0x7F, value >> 7
    out.append(byte | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
  key = _varint(number << 3 | wire_type)
  if wire_type == 2:  # Length-delimited.
    return key + _varint(len(payload)) + payload
  return key + payload


def _event(step: int, *, file_version: str | None = None,
           tag: str | None = None, value: float | None = None) -> bytes:
  """tensorflow.Event{wall_time=1, step=2, file_version=3, summary=5}."""
  out = _field(1, 1, struct.pack('<d', time.time())) + _field(2, 0, _varint(step))
  if file_version is not None:
    out += _field(3, 2, file_version.encode())
  if tag is not None:  # Summary{value=1: Value{tag=1, simple_value=2}}
    summary_value = _field(1, 2, tag.encode()) + _field(2, 5, struct.pack('<f', value))
    out += _field(5, 2, _field(1, 2, summary_value))
  return out


class SummaryWriter:
  """Scalar events in a new events file in `logdir`, through a `files.Log`:
  appended as they come on disk, written whole at each `flush` on gs://."""

  def __init__(self, logdir: str):
    files.makedirs(logdir)
    name = f'events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}'
    self._log = files.Log(os.path.join(logdir, name))
    self._write(_event(0, file_version='brain.Event:2'))

  def _write(self, record: bytes) -> None:
    header = struct.pack('<Q', len(record))
    self._log.write(header + struct.pack('<I', _masked_crc32c(header)) + record
                    + struct.pack('<I', _masked_crc32c(record)))

  def scalar(self, tag: str, value: float, step: int) -> None:
    self._write(_event(step, tag=tag, value=float(value)))

  def flush(self) -> None:
    self._log.flush()

  def close(self) -> None:
    self._log.close()
