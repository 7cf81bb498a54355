"""The Chinese names of what the system records: event types, roles, statuses. One glossary, used by
the API (`Accept-Language: zh`), the auditor's report and the bus contract's documentation, so that
the same event is called the same thing wherever an auditor or an institution reads it.

Keys are the bus's message types without prefix and version (`cn.skillcert.registration.submitted.v1`
→ `registration.submitted`), and the values of the role and status enums.
"""

from __future__ import annotations

import re

EVENTS: dict[str, str] = {
    # Institutions and plans (001, 004 §8)
    "institution.registered": "评价机构备案登记",
    "institution.scope_amended": "评价范围变更",
    "institution.signing_certificate_issued": "签发机构电子签章证书",
    "institution.signing_certificate_revoked": "吊销机构电子签章证书",
    "institution.sample_filed": "证书样本（含印章内容）备案",
    "institution.suspended": "暂停评价业务",
    "institution.reinstated": "恢复评价业务",
    "institution.evaluation_withdrawn": "取消评价业务",
    "evaluation_plan.published": "发布认定计划",
    "evaluation_plan.seat_taken": "占用报名名额",
    "evaluation_plan.seat_released": "释放报名名额",
    # Registrations (001, 000 ①②)
    "registration.submitted": "提交报名",
    "registration.resubmitted": "重新提交报名",
    "registration.approved": "报名审核通过",
    "registration.returned": "报名退回修改",
    "registration.rejected": "报名审核不通过",
    "registration.disqualified": "取消申报资格（承诺不实）",
    "registration.amended": "确认后变更报名信息",
    "registration.fee_paid": "缴纳认定费用",
    "registration.training_account_opened": "开设培训账户",
    "registration.training_completed": "完成培训学时",
    # Exam sessions and sittings (000 ③④)
    "exam_session.scheduled": "安排考试场次",
    "exam_session.seats_assigned": "编排考场座位",
    "exam_session.day_closed": "考试日结束（未到考记为缺考）",
    "exam_session.scores_published": "公布成绩",
    "exam_session.results_reported": "上报认定结果",
    "exam_session.results_confirmed": "认定结果审核通过",
    "exam_session.results_returned": "认定结果退回",
    "exam_session.scores_cancelled": "取消当次考试所有科目成绩",
    "sitting.ticket_issued": "发放准考证",
    "sitting.checked_in": "网上签到",
    "sitting.identity_checked": "入场身份核验",
    "sitting.signed_in": "考场签到（二次核验）",
    "sitting.started": "开始作答",
    "sitting.finished": "交卷",
    "sitting.marked_absent": "记为缺考",
    "sitting.scores_recorded": "登记成绩",
    "sitting.review_requested": "申请成绩复核",
    "sitting.review_answered": "成绩复核答复",
    # Certificates (000 ⑤⑥, 004 §11-14)
    "certificate.issued": "核发证书（生成编号）",
    "certificate.data_reported": "上报证书数据",
    "certificate.data_returned": "证书数据退回",
    "certificate.data_accepted": "证书数据审核通过",
    "certificate.made_queryable": "证书数据全国联网可查",
    "certificate.photo_attached": "附持证人照片",
    "certificate.electronic_issued": "签发电子证书",
    "certificate.printed": "打印证书",
    "certificate.print_spoiled": "证书打印作废",
    "certificate.print_not_made": "证书未打印（撤销占用的空白证书）",
    "certificate.handed_over": "发放证书",
    "certificate.receipt_signed": "本人签收",
    "certificate.proof_applied": "申请遗失/损毁证明",
    "certificate.proof_issued": "出具遗失/损毁证明",
    "certificate.proof_handed_over": "发放遗失/损毁证明",
    "certificate.correction_applied": "申请证书纠错",
    "certificate.correction_checked": "协会核查纠错申请",
    "certificate.deletion_checked": "协会核查数据删除",
    "certificate.correction_approved": "证书纠错批准",
    "certificate.correction_rejected": "证书纠错不予批准",
    "certificate.holder_commitment_recorded": "登记持证人承诺书",
    "certificate.data_deleted": "删除证书数据",
    "certificate.revoked": "收回并注销证书",
    # Blank stock (004 §1-7)
    "blank_stock.opened": "建立空白证书台账",
    "blank_stock.demand_filed": "报送年度空白证书需求",
    "blank_stock.forms_received": "领取空白证书",
    "blank_stock.form_used": "使用空白证书",
    "blank_stock.form_spoiled": "空白证书作废",
    "blank_stock.print_spoiled": "打印作废证书",
    "blank_stock.form_returned": "空白证书未打印退回库存",
    "blank_stock.forms_destroyed": "销毁作废证书",
    "blank_stock.stocktake_recorded": "空白证书盘点",
    # The audit chain
    "checkpoint.recorded": "记录哈希链检查点",
}

ROLES: dict[str, str] = {
    "system": "系统",
    "institution_staff": "评价机构工作人员",
    "provincial_centre": "省职业技能鉴定指导中心",
    "hr_department": "人力资源社会保障部门",
    "association": "行业协会",
    "auditor": "审计人员",
    "candidate": "考生",
}

STATUSES: dict[str, str] = {
    # registrations
    "submitted": "待审核",
    "approved": "审核通过",
    "returned": "退回修改",
    "rejected": "审核不通过",
    "disqualified": "已取消申报资格",
    # certificates and their data
    "issued": "已核发",
    "unreported": "数据未上报",
    "reported": "数据已上报",
    "data_reported": "数据已上报",
    "accepted": "数据审核通过",
    "data_accepted": "数据审核通过",
    "queryable": "全国联网可查",
    "handed_over": "已发放",
    "corrected": "已更正",
    "proof_issued": "已出具遗失/损毁证明",
    "deleted": "数据已删除",
    "data_deleted": "数据已删除（证书无效）",
    "valid": "有效",
    "revoked": "无效（已注销）",
}

_TYPE = re.compile(r"^cn\.skillcert\.(?P<name>[a-z_]+\.[a-z_]+)\.v\d+$")


def event_name(message_type: str) -> str:
    """`cn.skillcert.registration.submitted.v1` → `registration.submitted` (a bare name stays as it is)."""
    m = _TYPE.match(message_type)
    return m["name"] if m else message_type


def event_label(message_type: str) -> str:
    return EVENTS.get(event_name(message_type), message_type)
