"""Sample files for the demo and the tests: a one-page PDF per attachment kind and a holder photo
that passes the photo rules (colour, white background, 一寸). Real bytes, so they go through the
same upload checks and storage as anyone's."""

from __future__ import annotations

import functools
import io

from PIL import Image, ImageDraw

from domain.registration import Attachment, AttachmentKind
from infra.services import attachments as files
from infra.store.attachments import Attachments


def document(kind: AttachmentKind) -> bytes:
    """A minimal PDF standing for a scanned or signed document of this kind."""
    return b"%PDF-1.4\n% skillcert sample: " + kind.value.encode() + b"\n%%EOF\n"


@functools.cache
def photo(variant: int = 0) -> bytes:
    """A 354 x 496 JPEG (一寸 at 360 dpi): a figure in a coloured jacket on white."""
    image = Image.new("RGB", (354, 496), "white")
    draw = ImageDraw.Draw(image)
    jacket = [(40, 80, 160), (150, 40, 40), (30, 110, 60)][variant % 3]
    draw.ellipse((52, 330, 302, 620), fill=jacket)  # shoulders
    draw.rectangle((150, 270, 204, 350), fill=(225, 180, 150))  # neck
    draw.ellipse((107, 110, 247, 300), fill=(235, 195, 165))  # face
    draw.chord((100, 90, 254, 230), 180, 360, fill=(30, 25, 20))  # hair
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, dpi=(360, 360))
    return out.getvalue()


def attachment(kind: AttachmentKind) -> Attachment:
    return Attachment(kind=kind, file_name=f"{kind.value}.pdf", sha256=files.digest(document(kind)))


def photo_attachment(variant: int = 0) -> Attachment:
    return Attachment(kind=AttachmentKind.PHOTO, file_name=f"photo-{variant}.jpg", sha256=files.digest(photo(variant)))


def hold(store: Attachments, uploaded_by: str = "system:samples") -> None:
    """Put every sample in the store, as uploads would; uploaded by the installation itself (SYSTEM),
    so any actor may refer to them."""
    for kind in AttachmentKind:
        content = document(kind)
        store.put(content, files.digest(content), files.check_document(content), uploaded_by)
    for variant in range(3):
        content = photo(variant)
        media_type, size = files.check_photo(content)
        store.put(content, files.digest(content), media_type, uploaded_by, size)
