"""Contact sheet of fer_synth: subjects x expressions at peak, one sequence.

  python -m fer_jax.data_builders.fer_synth.contact_sheet \
      --out=docs/fer_synth_contact_sheet.png [--size=112] [--subjects=6]

Rows are subjects, columns the seven expressions at their peak frame; the last
row is one whole sequence from neutral to peak, so identity variation can be
compared with expression change at a glance.
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw, ImageFont

from fer_jax.data_builders.fer_synth import generator

_HEADER = 18  # pixels of caption above each block
_INK = (20, 20, 20)


def contact_sheet(spec: generator.SynthSpec, subjects: int,
                  sequence_subject: int, sequence_expression: str
                  ) -> Image.Image:
  """Builds the sheet for the first `subjects` subjects of `spec`."""
  s = spec.image_size
  cols = len(generator.EXPRESSIONS)
  strip = generator.generate_sequence(
      spec, sequence_subject,
      _sequence_of(spec, sequence_subject, sequence_expression))
  thumb = cols * s // len(strip)
  height = _HEADER + subjects * s + _HEADER + thumb
  sheet = Image.new("RGB", (cols * s, height), (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  font = ImageFont.load_default(size=12)
  for col, name in enumerate(generator.EXPRESSIONS):
    draw.text((col * s + 4, 3), name, fill=_INK, font=font)
    for row in range(subjects):
      peak = generator.generate_sequence(
          spec, row, _sequence_of(spec, row, name))[-1]["image"]
      sheet.paste(Image.fromarray(peak), (col * s, _HEADER + row * s))
  top = _HEADER + subjects * s
  draw.text((4, top + 3), f"subject {sequence_subject}, {sequence_expression}:"
            f" frames 1-{len(strip)}, neutral -> peak", fill=_INK, font=font)
  for t, frame in enumerate(strip):
    image = Image.fromarray(frame["image"]).resize(
        (thumb, thumb), Image.Resampling.LANCZOS)
    sheet.paste(image, (t * thumb, top + _HEADER))
  return sheet


def _sequence_of(spec: generator.SynthSpec, subject: int, name: str) -> int:
  for seq in range(spec.sequences_per_subject):
    if generator.sequence_expression(spec, subject, seq) == name:
      return seq
  raise ValueError(f"subject {subject} has no {name} sequence in {spec}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="docs/fer_synth_contact_sheet.png")
  parser.add_argument("--size", type=int, default=112,
                      help="image size of each face (pixels)")
  parser.add_argument("--subjects", type=int, default=6)
  parser.add_argument("--num_frames", type=int, default=12)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--sequence_subject", type=int, default=2)
  parser.add_argument("--sequence_expression", default="surprise",
                      choices=generator.EXPRESSIONS)
  args = parser.parse_args(argv)
  spec = generator.SynthSpec(
      num_subjects=max(args.subjects, args.sequence_subject + 1),
      sequences_per_subject=len(generator.EXPRESSIONS),
      num_frames=args.num_frames, image_size=args.size, seed=args.seed)
  sheet = contact_sheet(spec, args.subjects, args.sequence_subject,
                        args.sequence_expression)
  # A 256-colour palette keeps the noisy faces under ~250 KB for the repo.
  sheet = sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                         dither=Image.Dither.NONE)
  sheet.save(args.out, optimize=True)
  print(f"wrote {args.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
  main()
