"""Uploads: what a file is (from its bytes, never its name or header), how big it may be, and the
rules a holder's certificate photo meets (004 §11.2(1): 近半年内一寸彩色白底照片).

The photo rules, checked on the decoded image:
- JPEG or PNG, at least 295 × 413 pixels (25 × 35 mm at 300 dpi, the print's resolution);
- 一寸 proportions: width / height within 4% of 25 / 35;
- colour: at least 2% of the pixels clearly coloured (a grey-scale scan is refused);
- white background: the top corners (each 8% × 8% of the picture) average at least 215 of 255 in
  every channel and are nearly neutral;
- recent: printed within 183 days of upload (近半年内; the upload date stands for the day it was taken,
  which nothing in a file proves).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from datetime import date, timedelta

from PIL import Image, ImageOps, ImageStat

from domain.errors import InvalidInput

MAX_BYTES = 10 * 1024 * 1024  # a 600 dpi A4 scan as PDF or JPEG fits
MAX_PHOTO_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 40_000_000  # decoding more (a decompression bomb) is refused before it is decoded
MIN_PHOTO = (295, 413)
ASPECT = 25 / 35
RECENT = timedelta(days=183)

MEDIA = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png", b"%PDF-": "application/pdf"}


def sniff(content: bytes) -> str:
    """The media type the content's own first bytes declare."""
    if not content:
        raise InvalidInput([("file", "the file is empty")])
    for magic, media_type in MEDIA.items():
        if content.startswith(magic):
            return media_type
    raise InvalidInput([("file", "not a JPEG, PNG or PDF file (judged by its content, not its name)")])


def check_document(content: bytes) -> str:
    """A scan or a signed form: answers its media type."""
    if len(content) > MAX_BYTES:
        raise InvalidInput([("file", f"larger than {MAX_BYTES:,} bytes")])
    media_type = sniff(content)
    if media_type == "application/pdf" and b"%%EOF" not in content[-2048:]:
        raise InvalidInput([("file", "a PDF that does not end (%%EOF missing): the upload was cut short?")])
    if media_type != "application/pdf":
        _decode(content)  # an image that does not decode is no scan
    return media_type


def _decode(content: bytes) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(content))
            if image.width * image.height > MAX_PIXELS:
                raise InvalidInput([("file", f"{image.width} × {image.height} pixels: more than {MAX_PIXELS:,}")])
            image.load()
        except InvalidInput:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidInput([("file", f"more than {MAX_PIXELS:,} pixels")]) from None
        except Exception as e:  # a truncated or corrupt image: Pillow's errors vary by format
            raise InvalidInput([("file", f"the image does not decode ({type(e).__name__})")]) from None
    return image


def check_photo(content: bytes) -> tuple[str, tuple[int, int]]:
    """The holder's certificate photo: answers its media type and size in pixels, or refuses naming
    every rule it breaks."""
    if len(content) > MAX_PHOTO_BYTES:
        raise InvalidInput([("file", f"a photo larger than {MAX_PHOTO_BYTES:,} bytes")])
    media_type = sniff(content)
    if media_type == "application/pdf":
        raise InvalidInput([("file", "a photo is a JPEG or PNG image, not a PDF")])
    image = ImageOps.exif_transpose(_decode(content)).convert("RGB")  # as a phone shows it, turned upright
    w, h = image.size
    problems = []
    if w < MIN_PHOTO[0] or h < MIN_PHOTO[1]:
        problems.append(f"{w} × {h} pixels: at least {MIN_PHOTO[0]} × {MIN_PHOTO[1]} (25 × 35 mm at 300 dpi)")
    if abs((w / h) / ASPECT - 1) > 0.04:
        problems.append(f"proportions {w}:{h}; a 一寸 photo is 25:35 (width:height), within 4%")
    small = image.resize((60, 84))
    hsv = small.convert("HSV")
    _, saturation, value = hsv.split()
    coloured = sum(1 for s, v in zip(saturation.tobytes(), value.tobytes(), strict=True) if s > 60 and v > 40)
    if coloured < 0.02 * 60 * 84:
        problems.append("not a colour photo (彩色): the picture is grey-scale")
    corner = max(2, round(60 * 0.08)), max(2, round(84 * 0.08))
    for name, box in (("top left", (0, 0, corner[0], corner[1])), ("top right", (60 - corner[0], 0, 60, corner[1]))):
        mean = ImageStat.Stat(small.crop(box)).mean
        if min(mean) < 215 or max(mean) - min(mean) > 20:
            problems.append(f"the background is not white (白底) at the {name} corner")
            break
    if problems:
        raise InvalidInput([("file", p) for p in problems])
    return media_type, (w, h)


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def recent(uploaded_on: date, today: date) -> bool:
    return today - uploaded_on <= RECENT


def upright(content: bytes) -> bytes:
    """A photo as it is meant to be seen: a phone's JPEG stored sideways with an EXIF orientation is
    turned (and re-encoded) before it is printed, since PDF ignores EXIF. Others are returned as they are."""
    image = Image.open(io.BytesIO(content))
    if image.getexif().get(0x0112, 1) == 1:
        return content
    out = io.BytesIO()
    ImageOps.exif_transpose(image).convert("RGB").save(out, "JPEG", quality=95)
    return out.getvalue()
