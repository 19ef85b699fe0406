"""Tests of ddgan_jax.input_pipeline: every source, host sharding, flips, determinism and resume."""

import logging
import os
import time

from configs import default
import numpy as np
from PIL import Image
import pytest
from sklearn import datasets
import tensorflow_datasets as tfds

from ddgan_jax import input_pipeline
from ddgan_jax.data import local
from ddgan_jax.data import tfds_sources

_MOCK_EXAMPLES = 40


def make_config(dataset, *, image_size=16, channels=3, batch=16, **data):
  config = default.get_config()
  config.data.dataset = dataset
  config.model.image_size = image_size
  config.model.num_channels = channels
  config.training.batch_size = batch
  config.data.update(data)
  return config


def take(config, steps, **kwargs):
  batches, _ = input_pipeline.create_dataset(config, **kwargs)
  return [next(batches) for _ in range(steps)]


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])


def assert_resumes(config, *, start=3, steps=3):
  """Batches from step `start` equal those an uninterrupted run sees there (epoch crossings too)."""
  full = take(config, start + steps)
  assert_same_batches(take(config, steps, start_step=start), full[start:])
  assert_same_batches(take(config, start + steps), full)


def assert_batch(batch, shape, *, spread=True):
  assert batch['image'].shape == shape and batch['image'].dtype == np.float32
  assert batch['label'].shape == shape[:1] and batch['label'].dtype == np.int32
  assert batch['image'].min() >= -1.0 and batch['image'].max() <= 1.0
  if spread:
    assert batch['image'].min() < -0.5 and batch['image'].max() > 0.5
  assert batch['image'].std() > 0.01


def to_uint8(images):
  return np.round((images + 1.0) * 127.5).astype(np.uint8)


@pytest.fixture
def mock_tfds(monkeypatch):
  monkeypatch.setattr(tfds_sources, '_check_can_prepare', lambda name, root, files: None)
  with tfds.testing.mock_data(num_examples=_MOCK_EXAMPLES):
    yield


@pytest.fixture
def npz_file(tmp_path):
  """64 asymmetric 16x16 RGB images; label i is the index of image i."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(64, 16, 16, 3), dtype=np.uint8)
  path = tmp_path / 'images.npz'
  np.savez(path, images=images, labels=np.arange(64))
  return str(path), images


def test_digits_shapes_labels_and_no_flip():
  config = make_config('digits', channels=1, random_flip=True)
  batches, n = input_pipeline.create_dataset(config)
  assert n == 1797
  digits = np.round(datasets.load_digits().images * (255 / 16)).astype(np.uint8)[..., None]
  expected = local.resize_array(digits, 16)
  flat = {e.tobytes() for e in expected}
  for _ in range(3):
    batch = next(batches)
    assert_batch(batch, (16, 16, 16, 1))
    assert set(batch['label']) <= set(range(10))
    assert all(img.tobytes() in flat for img in to_uint8(batch['image']))
  rgb = take(make_config('digits', channels=3, image_size=32), 1)[0]
  assert_batch(rgb, (16, 32, 32, 3))
  np.testing.assert_array_equal(rgb['image'][..., 0], rgb['image'][..., 2])


def test_stacked_digits_stack_three_digits_drawn_from_the_seed():
  config = make_config('stacked_digits', random_flip=True)
  batches, n = input_pipeline.create_dataset(config)
  assert n == 1797 * local.STACKED_DIGITS_PERMUTATIONS
  digits = np.round(datasets.load_digits().images * (255 / 16)).astype(np.uint8)[..., None]
  digit = {d.tobytes(): int(label)
           for d, label in zip(local.resize_array(digits, 16), datasets.load_digits().target)}
  channels = []
  for _ in range(3):
    batch = next(batches)
    assert_batch(batch, (16, 16, 16, 3))
    for image, label in zip(to_uint8(batch['image']), batch['label']):
      d = [digit[image[..., c:c + 1].tobytes()] for c in range(3)]  # KeyError if flipped.
      assert label == 100 * d[0] + 10 * d[1] + d[2]
      channels.append(d)
  assert len({tuple(d) for d in channels}) > 40  # Independent channels, not one digit thrice.
  assert_resumes(config)
  source = local.stacked_digits_source(config)
  config.seed += 1
  first = source.load(np.arange(64))[0]
  np.testing.assert_array_equal(first, local.stacked_digits_source(make_config(
      'stacked_digits')).load(np.arange(64))[0])
  assert not np.array_equal(first, local.stacked_digits_source(config).load(np.arange(64))[0])
  assert local.stacked_digits_source(make_config('stacked_digits',
                                                 num_examples=50)).num_examples == 50


@pytest.mark.parametrize('random_flip', [True, False])
def test_npz_flips_only_when_asked(npz_file, random_flip):
  path, images = npz_file
  flipped = 0
  for batch in take(make_config('npz', path=path, random_flip=random_flip), 4):
    assert_batch(batch, (16, 16, 16, 3))
    for image, label in zip(to_uint8(batch['image']), batch['label']):
      same = np.array_equal(image, images[label])
      mirrored = np.array_equal(image, images[label][:, ::-1])
      assert same or mirrored
      flipped += mirrored
  assert (0 < flipped < 64) if random_flip else flipped == 0


def test_flips_differ_between_steps(npz_file):
  """Each example is flipped afresh every time it is seen, not once for the whole run."""
  path, images = npz_file
  seen, patterns = {}, set()
  for batch in take(make_config('npz', path=path, random_flip=True), 8):
    pattern = []
    for image, label in zip(to_uint8(batch['image']), batch['label']):
      pattern.append(np.array_equal(image, images[label][:, ::-1]))
      seen.setdefault(int(label), []).append(pattern[-1])
    patterns.add(tuple(pattern))
  assert len(patterns) > 1  # The flips by batch position change from step to step too.
  repeated = [flips for flips in seen.values() if len(flips) > 1]
  assert repeated and any(len(set(flips)) > 1 for flips in repeated)


def test_npz_grayscale_resized_to_rgb(tmp_path):
  gray = np.random.default_rng(1).integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
  np.savez(tmp_path / 'gray.npz', gray)
  batches, n = input_pipeline.create_dataset(make_config('npz', path=str(tmp_path / 'gray.npz')))
  batch = next(batches)
  assert n == 20
  assert_batch(batch, (16, 16, 16, 3))
  np.testing.assert_array_equal(batch['image'][..., 0], batch['image'][..., 1])
  np.testing.assert_array_equal(batch['label'], np.zeros(16))


def test_hosts_split_each_global_batch_disjointly_and_completely(npz_file):
  path, _ = npz_file
  config = make_config('npz', path=path, num_examples=60)
  one_host = take(config, 7, process_index=0, process_count=1)
  hosts = [take(config, 7, process_index=p, process_count=2) for p in range(2)]
  for step, whole in enumerate(one_host):
    parts = [hosts[p][step] for p in range(2)]
    assert all(part['image'].shape == (8, 16, 16, 3) for part in parts)
    np.testing.assert_array_equal(np.concatenate([p['label'] for p in parts]), whole['label'])
    np.testing.assert_array_equal(np.concatenate([p['image'] for p in parts]), whole['image'])
  for epoch in range(2):  # 60 // 16 = 3 steps per epoch; the other 12 examples are dropped.
    seen = np.concatenate([b['label'] for b in one_host[3 * epoch:3 * epoch + 3]])
    assert len(set(seen)) == 48 and seen.max() < 60
  assert not np.array_equal(one_host[0]['label'], one_host[3]['label'])


def test_seed_determines_order(npz_file):
  path, _ = npz_file
  first = take(make_config('npz', path=path), 2)
  assert_same_batches(take(make_config('npz', path=path, prefetch=0), 2), first)
  other = make_config('npz', path=path)
  other.seed += 1
  assert not np.array_equal(take(other, 1)[0]['label'], first[0]['label'])


def test_local_sources_resume(npz_file, tmp_path):
  assert_resumes(make_config('digits', channels=1), start=112, steps=2)  # 1797 // 16 = 112 steps.
  assert_resumes(make_config('npz', path=npz_file[0]))
  folder = tmp_path / 'resume'
  folder.mkdir()
  for i in range(20):
    Image.fromarray(np.full((12, 12, 3), 10 * i, np.uint8)).save(folder / f'{i}.png')
  assert_resumes(make_config('image_folder', path=str(folder), batch=8), start=2, steps=2)


def test_image_folder_converts_skips_and_counts(tmp_path, caplog):
  colors = []
  sub = tmp_path / 'a' / 'b'
  sub.mkdir(parents=True)
  for i in range(12):
    color = (20 * i, 255 - 20 * i, 7 * i)
    colors.append(color)
    folder, suffix = (sub, '.JPG') if i % 3 == 0 else (tmp_path, '.png')
    Image.new('RGB', (24 + i, 40), color).save(folder / f'img{i}{suffix}')
  Image.new('L', (30, 30), 77).save(tmp_path / 'gray.png')
  Image.new('RGBA', (30, 20), (10, 200, 30, 128)).save(tmp_path / 'alpha.png')
  Image.new('P', (16, 16), 0).save(tmp_path / 'palette.png')
  colors += [(77, 77, 77), (10, 200, 30), (0, 0, 0)]
  (tmp_path / 'corrupt.png').write_bytes(os.urandom(500))
  noise = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
  Image.fromarray(noise).save(tmp_path / 'truncated.jpg')
  (tmp_path / 'truncated.jpg').write_bytes((tmp_path / 'truncated.jpg').read_bytes()[:3000])
  (tmp_path / 'notes.txt').write_text('not an image')

  config = make_config('image_folder', path=str(tmp_path), batch=8)
  with caplog.at_level(logging.WARNING):
    batches, n = input_pipeline.create_dataset(config)
    epoch = [next(batches) for _ in range(2)]
  assert n == 16  # 15 good images and the truncated JPEG; the corrupt file is skipped.
  assert any('Skipping 1 of 17 files' in r.getMessage() for r in caplog.records)
  assert any('Cannot decode' in r.getMessage() for r in caplog.records)
  seen = []
  for batch in epoch:
    assert batch['image'].shape == (8, 16, 16, 3)
    pixels = to_uint8(batch['image']).reshape(8, -1, 3).astype(int)
    assert np.abs(pixels - pixels[:, :1]).max() <= 3  # Solid colours stay solid.
    seen += [tuple(p[0]) for p in pixels]
  for color in colors:
    assert any(np.abs(np.subtract(color, s)).max() <= 3 for s in seen), color


def test_cifar10_mock(mock_tfds):
  config = make_config('cifar10', image_size=32)
  batches, n = input_pipeline.create_dataset(config)
  assert n == _MOCK_EXAMPLES
  source = next(iter(tfds.as_numpy(tfds.load('cifar10', split='train', batch_size=_MOCK_EXAMPLES))))
  flat = {img.tobytes(): lbl for img, lbl in zip(source['image'], source['label'])}
  flipped = 0
  for _ in range(4):
    batch = next(batches)
    assert_batch(batch, (16, 32, 32, 3))
    for image, label in zip(to_uint8(batch['image']), batch['label']):
      mirrored = image[:, ::-1].tobytes() in flat and image.tobytes() not in flat
      flipped += mirrored
      assert flat[(image[:, ::-1] if mirrored else image).tobytes()] == label
  assert 0 < flipped < 64
  assert_resumes(config)


def test_stackmnist_mock_labels_match_channels(mock_tfds):
  config = make_config('stackmnist', image_size=32, random_flip=True)
  batches, n = input_pipeline.create_dataset(config)
  assert n == 2 * _MOCK_EXAMPLES
  mnist = next(iter(tfds.as_numpy(tfds.load('mnist', split='train', batch_size=_MOCK_EXAMPLES))))
  digit = {img[..., 0].tobytes(): int(lbl) for img, lbl in zip(mnist['image'], mnist['label'])}
  labels = []
  for _ in range(5):  # 80 // 16 = 5: a whole epoch.
    batch = next(batches)
    assert_batch(batch, (16, 32, 32, 3))
    images = to_uint8(batch['image'])
    assert not images[:, :2].any() and not images[:, :, -2:].any()  # Zero padding 28 -> 32.
    for image, label in zip(images, batch['label']):
      d = [digit[image[2:30, 2:30, c].tobytes()] for c in range(3)]  # KeyError if flipped.
      assert label == 100 * d[0] + 10 * d[1] + d[2]
    labels += list(batch['label'])
  assert len(labels) == 80
  assert_resumes(config, start=4)


def test_streaming_tfds_mock_resumes_and_shards(mock_tfds):
  config = make_config('celeba_hq_256', image_size=32)
  batches, n = input_pipeline.create_dataset(config)
  assert n == _MOCK_EXAMPLES
  assert_batch(next(batches), (16, 32, 32, 3), spread=False)  # Mock noise, averaged by resizing.
  assert_resumes(config)
  host = take(config, 2, process_index=1, process_count=2)
  assert host[1]['image'].shape == (8, 32, 32, 3)
  gray = take(make_config('lsun_church', image_size=32, channels=1, num_examples=120_000), 1)[0]
  assert gray['image'].shape == (16, 32, 32, 1)


def test_unprepared_tfds_fails_at_once_with_instructions(tmp_path, monkeypatch):
  missing = str(tmp_path / 'no_such_dir')
  start = time.monotonic()
  with pytest.raises(FileNotFoundError, match=rf'tfds build cifar10 --data_dir={missing}'):
    input_pipeline.create_dataset(make_config('cifar10', data_dir=missing, download=False))
  monkeypatch.setenv('TFDS_DATA_DIR', missing)
  with pytest.raises(FileNotFoundError, match=rf'data256x256.tar.*{missing}/downloads/manual'):
    input_pipeline.create_dataset(make_config('celeba_hq_256', image_size=32, download=True))
  def unreachable(address, timeout):
    raise OSError(f'{address} unreachable within {timeout} s')

  monkeypatch.setattr(tfds_sources.socket, 'create_connection', unreachable)
  with pytest.raises(ConnectionError, match=r"www.cs.toronto.edu.*tfds build cifar10"):
    input_pipeline.create_dataset(make_config('cifar10', image_size=32, download=True))
  assert time.monotonic() - start < 30


@pytest.mark.parametrize('change, message', [
    (dict(dataset='imagenet'), 'known datasets: celeba_hq_256, cifar10, digits'),
    (dict(batch=12), r'multiple of the device count \(8\)'),
    (dict(image_size=20), 'image_size=20 does not fit'),
])
def test_bad_config_is_rejected(change, message):
  config = make_config(change.pop('dataset', 'digits'), **{
      k: change[k] for k in ('batch', 'image_size') if k in change})
  with pytest.raises(ValueError, match=message):
    input_pipeline.create_dataset(config)


def test_bad_paths_are_rejected(tmp_path):
  with pytest.raises(FileNotFoundError, match='No .jpg/.jpeg/.png files'):
    input_pipeline.create_dataset(make_config('image_folder', path=str(tmp_path)))
  with pytest.raises(FileNotFoundError, match='is not a directory'):
    input_pipeline.create_dataset(make_config('image_folder', path=str(tmp_path / 'missing')))
  with pytest.raises(FileNotFoundError, match='is not a file'):
    input_pipeline.create_dataset(make_config('npz', path=str(tmp_path / 'missing.npz')))
  np.savez(tmp_path / 'float.npz', images=np.zeros((20, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match='must be uint8'):
    input_pipeline.create_dataset(make_config('npz', path=str(tmp_path / 'float.npz')))
  np.savez(tmp_path / 'few.npz', images=np.zeros((10, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match='fewer than config.training.batch_size=16'):
    input_pipeline.create_dataset(make_config('npz', path=str(tmp_path / 'few.npz')))
  with pytest.raises(ValueError, match=r'process_index=2 is outside'):
    input_pipeline.create_dataset(make_config('digits'), process_index=2, process_count=2)
