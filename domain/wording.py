"""Words a certificate's own wording must not use (004 §11 一(4)): 中华人民共和国, 中国, 中华, 国家,
全国, 广东, 广东省, 职业资格, 人员资格, except inside the institution's registered name.

The rule is about what the institution and the document say (the title, the body text, the
occupation and job names the institution publishes), never about a person's lawful name: 王中华
and 张国家 get certificates and proofs. So it is checked where institution-authored wording enters
(publishing a plan), not where a holder's name is printed.
"""

from __future__ import annotations

FORBIDDEN = ("中华人民共和国", "中国", "中华", "国家", "全国", "广东省", "广东", "职业资格", "人员资格")


def forbidden_words(text: str, institution_name: str = "") -> list[str]:
    """The forbidden words in `text` outside the institution's registered name, in the order listed."""
    rest = text.replace(institution_name, "") if institution_name else text
    return [w for w in FORBIDDEN if w in rest]


def problem(text: str, institution_name: str = "") -> str | None:
    found = forbidden_words(text, institution_name)
    if not found:
        return None
    return (f"contains {'、'.join(found)}, which a certificate's wording may not use (004 §11 一(4)); "
            "only the institution's registered name may hold them")  # fmt: skip
