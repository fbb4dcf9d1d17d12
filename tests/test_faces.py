"""fer_jax.faces: faces found in photos (a real one that scikit-image ships,
and photos made from it by known similarity transforms) and aligned as the
training data were."""


import ml_collections
import numpy as np
import pytest
from PIL import Image

from fer_jax import faces
from fer_jax.data import align

pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

SPEC = align.AlignSpec(image_size=64)


@pytest.fixture(scope="module")
def astronaut():
  return skdata.astronaut()


@pytest.fixture(scope="module")
def reference(astronaut):
  (face,) = faces.find_faces(astronaut, SPEC)
  return face


def test_the_real_face_is_found_and_its_eyes_aligned(reference):
  # Eileen Collins' face: box around (177, 67) of side ~93 px in the 512 px
  # photo, eyes found by the cascade, her head tilted ~3 degrees.
  x, y, w, h = reference.box
  assert abs(x - 177) <= 6 and abs(y - 67) <= 6 and 80 <= w == h <= 105
  assert reference.eyes_found
  (lx, ly), (rx, ry) = reference.eyes
  assert x < lx < x + w / 2 < rx < x + w and y < ly < y + h / 2
  assert 1 < reference.roll_deg < 6
  # The affine takes the eyes exactly where the builders put them.
  np.testing.assert_allclose(
      align.apply_affine(reference.affine, reference.eyes),
      [[(63 - 0.36 * 64) / 2, 0.40 * 64], [(63 + 0.36 * 64) / 2, 0.40 * 64]],
      atol=1e-9)
  assert reference.crop.shape == (64, 64, 3)
  assert reference.crop.dtype == np.uint8


def _moved(image, eyes, degrees, scale, offset=(300.0, 260.0), size=700):
  """``image`` turned by ``degrees`` and scaled about the eye midpoint,
  which lands at ``offset`` of a ``size`` px canvas; and that affine."""
  t = np.radians(degrees)
  lin = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
  m = np.concatenate([lin, (np.array(offset) - lin @ eyes.mean(0))[:, None]],
                     1)
  return np.asarray(align.warp(Image.fromarray(image), m, size)), m


@pytest.mark.parametrize("degrees,scale", [(8, 1.3), (-12, 1.3)])
def test_a_turned_and_scaled_photo_gives_the_same_crop(
    astronaut, reference, degrees, scale):
  image, m = _moved(astronaut, reference.eyes, degrees, scale)
  (face,) = faces.find_faces(image, SPEC, max_faces=1)
  assert face.eyes_found
  # The eyes are found where the transform took them (within 4 px of
  # 93 * 1.3 px faces) and the roll is undone.
  np.testing.assert_allclose(face.eyes,
                             align.apply_affine(m, reference.eyes), atol=4)
  assert face.roll_deg == pytest.approx(reference.roll_deg + degrees, abs=3)
  diff = np.abs(face.crop.astype(float) - reference.crop).mean()
  unrolled, _ = faces.align_face(image, faces.box_eyes(face.box), SPEC)
  naive = np.abs(unrolled.astype(float) - reference.crop).mean()
  # Measured: 7.3 (8 degrees) and 5.8 (-12) grey levels of mean absolute
  # difference, vs 32.9 and 40.6 for a crop placed from the box alone.
  assert diff < 14 < naive


def test_faces_come_left_to_right_and_max_faces_keeps_the_largest(
    astronaut, reference):
  canvas = np.full((400, 900, 3), 128, np.uint8)
  head = astronaut[20:220, 130:330]  # the face with its hair and neck
  canvas[100:300, 550:750] = head
  small = np.asarray(Image.fromarray(head).resize((150, 150),
                                                  Image.Resampling.BILINEAR))
  canvas[120:270, 80:230] = small
  found = faces.find_faces(canvas, SPEC)
  assert len(found) == 2
  (a, b) = found
  assert a.box[0] < 230 < 550 < b.box[0]
  assert a.box[2] < b.box[2]
  np.testing.assert_allclose(b.box[2], reference.box[2], atol=8)
  (largest,) = faces.find_faces(canvas, SPEC, max_faces=1)
  assert largest.box == b.box


def test_no_face_in_a_blank_or_noise_image():
  rng = np.random.default_rng(0)
  assert faces.find_faces(np.full((200, 300, 3), 90, np.uint8), SPEC) == []
  noise = rng.integers(0, 256, (240, 320, 3), np.uint8)
  assert faces.find_faces(noise, SPEC) == []


def test_eyes_not_found_are_placed_from_the_box(astronaut, monkeypatch):
  assert faces.find_eyes(np.full((100, 100), 200, np.uint8),
                         (0, 0, 100, 100)) is None
  np.testing.assert_allclose(faces.box_eyes((10, 20, 100, 100)),
                             [[36.5, 56.5], [84.5, 56.5]])
  monkeypatch.setattr(faces, "find_eyes", lambda image, box, grey=None: None)
  (face,) = faces.find_faces(astronaut, SPEC)
  assert not face.eyes_found and face.roll_deg == 0
  np.testing.assert_allclose(face.eyes, faces.box_eyes(face.box))


def test_grey_and_rgba_photos_are_read_as_rgb(tmp_path, astronaut):
  grey = np.asarray(Image.fromarray(astronaut).convert("L"))
  Image.fromarray(grey).save(tmp_path / "grey.png")
  rgb = faces.read_image(str(tmp_path / "grey.png"))
  assert rgb.shape == (512, 512, 3)
  np.testing.assert_array_equal(rgb[..., 0], grey)
  rgba = np.concatenate([astronaut, np.full((512, 512, 1), 7, np.uint8)], -1)
  np.testing.assert_array_equal(faces.as_rgb(rgba), astronaut)
  (tmp_path / "notes.png").write_text("not an image")
  with pytest.raises(ValueError, match="notes.png: not an image"):
    faces.read_image(str(tmp_path / "notes.png"))


def test_a_photo_is_turned_upright_by_its_exif_orientation(tmp_path,
                                                           astronaut):
  # A camera held sideways stores the pixels turned and says so in EXIF
  # (orientation 6: turn 90 degrees clockwise to view).
  turned = Image.fromarray(np.ascontiguousarray(np.rot90(astronaut, 1)))
  exif = Image.Exif()
  exif[0x0112] = 6
  turned.save(tmp_path / "sideways.png", exif=exif)
  np.testing.assert_array_equal(
      faces.read_image(str(tmp_path / "sideways.png")), astronaut)


def test_image_files_expand_folders_and_name_missing_paths(tmp_path):
  for name in ("b.JPG", "a.png", "readme.txt"):
    (tmp_path / name).write_bytes(b"")
  (tmp_path / "sub").mkdir()
  one = tmp_path / "one.jpeg"
  one.write_bytes(b"")
  assert faces.image_files([str(one), str(tmp_path)]) == [
      str(one), str(tmp_path / "a.png"), str(tmp_path / "b.JPG"),
      str(tmp_path / "one.jpeg")]
  with pytest.raises(ValueError, match="nothing.jpg: no such file"):
    faces.image_files([str(tmp_path / "nothing.jpg")])
  with pytest.raises(ValueError, match="sub: the folder holds no image"):
    faces.image_files([str(tmp_path / "sub")])


def _synth(profile, image_size=32):
  return ml_collections.ConfigDict(dict(
      name="fer_synth", synth=dict(num_subjects=6, sequences_per_subject=7,
                                   num_frames=8, image_size=image_size,
                                   seed=0, profile=profile)))


def test_the_training_alignment_is_the_data_sets_own():
  # An aligned fer_synth profile: its eye geometry at the set's size.
  spec = faces.training_alignment(_synth("benchmark", 64))
  assert (spec.image_size, spec.eye_distance, spec.eye_height) == (
      64, 0.36, 0.40)
  # The unaligned 'classic' faces: their mean eye geometry (measured:
  # eye distance 0.289, eye height 0.397 of the image).
  spec = faces.training_alignment(_synth("classic"))
  assert spec.image_size == 32
  assert spec.eye_distance == pytest.approx(0.289, abs=0.005)
  assert spec.eye_height == pytest.approx(0.397, abs=0.005)
  # A real set: its builder config's geometry (CK+ 'small': 64 px).
  spec = faces.training_alignment(ml_collections.ConfigDict(
      dict(name="ckplus", builder_config="small")))
  assert (spec.image_size, spec.eye_distance, spec.eye_height) == (
      64, 0.36, 0.40)
  with pytest.raises(ValueError, match="builder_config='huge'"):
    faces.training_alignment(ml_collections.ConfigDict(
        dict(name="ckplus", builder_config="huge")))
