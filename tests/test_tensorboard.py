import glob

from tensorboard.backend.event_processing import event_accumulator

from tfx_jax.training import tensorboard


def test_scalars_read_back_by_tensorboard(tmp_path):
  writer = tensorboard.SummaryWriter(str(tmp_path))
  expected = [('train/loss', 2.5, 10), ('eval/top1', 0.75, 10), ('train/loss', 1.25, 20)]
  for tag, value, step in expected:
    writer.scalar(tag, value, step)
  writer.close()
  assert len(glob.glob(str(tmp_path / 'events.out.tfevents.*'))) == 1
  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  assert sorted(acc.Tags()['scalars']) == ['eval/top1', 'train/loss']
  loss = [(e.step, e.value) for e in acc.Scalars('train/loss')]
  assert loss == [(10, 2.5), (20, 1.25)]
  assert [(e.step, e.value) for e in acc.Scalars('eval/top1')] == [(10, 0.75)]


def test_crc32c_known_answer():
  # RFC 3720 (iSCSI) test vector: CRC-32C of 32 zero bytes is 0x8A9136AA.
  crc = tensorboard._masked_crc32c(bytes(32))
  unmasked = ((crc - 0xA282EAD8) & 0xFFFFFFFF)
  unmasked = ((unmasked << 15) | (unmasked >> 17)) & 0xFFFFFFFF
  assert unmasked == 0x8A9136AA
