"""The Logging query language evaluator on its own grammar."""
import pytest

from events.log_entries import LogEntry
from local_cloud.logging.query import FilterSyntaxError, compile_filter, matches

ENTRY = {
    "logName": "projects/p/logs/dataflow.googleapis.com%2Fjob-message",
    "resource": {"type": "ml_job", "labels": {"job_id": "123", "task_name": "service"}},
    "labels": {"ml.googleapis.com/job_state": "FAILED", "plain": "x"},
    "severity": "ERROR",
    "textPayload": "Job failed. The replica exited",
    "jsonPayload": {"message": "Hello World", "tags": ["alpha", "beta"], "nested": {"deep": "Needle here"}},
    "operation": {"id": "op-1", "last": True},
    "count": 42,
}


@pytest.mark.parametrize(
    "text, expected",
    [
        ('resource.type="ml_job"', True),
        ('resource.type="ML_JOB"', True),  # string comparisons ignore case
        ('resource.type="ml"', False),
        ("resource.type=ml_job", True),  # bare word value
        ('resource.type:"ml"', True),
        ('textPayload:"REPLICA"', True),
        ('textPayload=~"^Job failed[.]"', True),
        ('textPayload=~"^job failed"', False),  # regular expressions keep case
        ('textPayload=~"exited$"', True),
        ('labels."ml.googleapis.com/job_state"="FAILED"', True),
        ('labels."ml.googleapis.com/job_state"=("SUCCEEDED" OR "FAILED")', True),
        ('labels."ml.googleapis.com/job_state"=("SUCCEEDED" OR "CANCELLED")', False),
        ('jsonPayload.tags="beta"', True),  # repeated field: any element
        ('jsonPayload.tags="gamma"', False),
        ('jsonPayload:"needle"', True),  # has on a struct searches inside it
        ("operation.last=true", True),
        ("operation.last=false", False),
        ("count=42", True),
        ('missing.field="x"', False),
        ('NOT missing.field="x"', True),
        ('NOT missing.field=~"^workerpool"', True),
        ('severity=ERROR AND resource.labels.job_id="123"', True),
        ('severity=ERROR resource.labels.job_id="999"', False),  # juxtaposition is AND
        ('severity=INFO OR resource.labels.job_id="123"', True),
        ('NOT severity=INFO', True),
        ('NOT NOT severity=INFO', False),
        ('(severity=INFO OR severity=ERROR) AND NOT labels.plain="y"', True),
        ('plain="x"', False),  # paths start at the top of the entry
        ('labels.plain = "x"', True),  # spaces around the operator
        ('"labels".plain="x"', True),
        ('textPayload="Job failed. The replica exited"', True),
        ('textPayload="Say \\"hi\\""', False),
    ],
)
def test_comparisons_and_boolean_operators(text, expected):
    assert matches(text, ENTRY) is expected


def test_or_binds_tighter_than_and():
    # Cloud Logging reads a OR NOT b AND NOT c OR d as (a OR (NOT b)) AND ((NOT c) OR d).
    # With AND binding tighter, each of the first two would be true instead.
    text = 'severity=INFO OR NOT count=42 AND NOT labels.plain=x OR operation.last=true'
    assert matches(text, ENTRY) is False  # (F OR F) AND (F OR T)
    assert matches('severity=INFO AND count=42 OR labels.plain=x', ENTRY) is False  # F AND (T OR T)
    assert matches('count=42 OR severity=INFO AND labels.plain=x', ENTRY) is True  # (T OR F) AND T


def test_quoted_strings_keep_escaped_quotes_and_regex_escapes():
    entry = {"textPayload": 'Say "hi"', "code": "abc123"}
    assert matches('textPayload="Say \\"hi\\""', entry)
    assert matches('code=~"[a-z]+\\d+"', entry)


def test_accepts_log_entry_objects():
    assert matches('resource.type="ml_job"', LogEntry.from_dict(ENTRY))


def test_filters_are_compiled_once():
    assert compile_filter('severity=ERROR') is compile_filter('severity=ERROR')


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty filter"),
        ('"some text"', "global text restrictions are not supported"),
        ('severity>=ERROR', "operator '>=' at column 9 is not supported"),
        ('severity!=ERROR', "operator '!='"),
        ('textPayload=~"("', "bad regular expression"),
        ('textPayload="open', "unterminated string starting at column 13"),
        ('(severity=ERROR', r"expected '\)' at column 16, found end of filter"),
        ('severity=ERROR)', r"unexpected '\)' at column 15"),
        ('severity=', "expected a value"),
        ('severity=AND', "expected a value"),
        ('AND severity=ERROR', "expected a field name"),
        ('-severity=ERROR', "'-' negation"),
        ('labels."a"b="x"', "expected '.'"),
        ('labels.="x"', "empty field name"),
        ('severity=ERROR OR', "expected a field name"),
        ('severity = ~ "x"', "unexpected '~' at column 12"),
    ],
)
def test_syntax_errors_say_what_and_where(text, words):
    with pytest.raises(FilterSyntaxError, match=words):
        compile_filter(text)
