"""The IMAP command grammar: every command form, the RFC 3501 examples, typed errors."""

from __future__ import annotations

import datetime as dt

import pytest

from postroom.proto.imap import grammar as g
from postroom.proto.imap.reader import (
    NEED_DATA,
    CommandLine,
    CommandReader,
    LiteralData,
    NeedContinuation,
    StreamedLiteral,
)


def frame(data: bytes) -> CommandLine:
    """Frame one command through the real reader, accepting every literal."""
    reader = CommandReader(stream_threshold=1000)
    reader.feed(data + b"\r\n")
    while True:
        event = reader.next_event()
        if isinstance(event, NeedContinuation):
            reader.accept_literal()
        elif isinstance(event, CommandLine):
            return event
        else:
            assert event is not NEED_DATA, "incomplete command"


def req(data: bytes, *, utf8: bool = False) -> g.Request:
    return g.parse_command(frame(data), utf8=utf8)


def cmd(data: bytes, *, utf8: bool = False) -> g.Command:
    return req(data, utf8=utf8).command


def error(data: bytes, *, utf8: bool = False) -> g.CommandParseError:
    with pytest.raises(g.CommandParseError) as info:
        req(data, utf8=utf8)
    return info.value


def seq(text: str) -> g.SequenceSet:
    cmd_ = cmd(b"t FETCH " + text.encode() + b" UID")
    assert isinstance(cmd_, g.Fetch)
    return cmd_.sequence


# -- RFC 3501 §6 examples ------------------------------------------------------------------


def test_rfc3501_any_state_and_auth_examples() -> None:
    assert req(b"a001 CAPABILITY") == g.Request("a001", g.Capability())
    assert cmd(b"a002 NOOP") == g.Noop()
    assert cmd(b"A023 LOGOUT") == g.Logout()
    assert cmd(b"a002 STARTTLS") == g.StartTLS()
    assert cmd(b"A001 AUTHENTICATE GSSAPI") == g.Authenticate("GSSAPI")
    assert cmd(b"a001 LOGIN SMITH SESAME") == g.Login("SMITH", "SESAME")


def test_rfc3501_authenticated_state_examples() -> None:
    assert cmd(b"A142 SELECT INBOX") == g.Select("INBOX")
    assert cmd(b"A932 EXAMINE blurdybloop") == g.Select("blurdybloop", readonly=True)
    assert cmd(b"A003 CREATE owatagusiam/") == g.Create("owatagusiam/")
    assert cmd(b"A683 DELETE blurdybloop") == g.Delete("blurdybloop")
    assert cmd(b"A683 RENAME blurdybloop sarasoop") == g.Rename("blurdybloop", "sarasoop")
    assert cmd(b"A002 SUBSCRIBE #news.comp.mail.mime") == g.Subscribe("#news.comp.mail.mime")
    assert cmd(b"A002 UNSUBSCRIBE #news.comp.mail.mime") == g.Unsubscribe("#news.comp.mail.mime")
    assert cmd(b'A101 LIST "" ""') == g.List("", ("",))
    assert cmd(b'A102 LIST #news.comp.mail.misc ""') == g.List("#news.comp.mail.misc", ("",))
    assert cmd(b"A202 LIST ~/Mail/ %") == g.List("~/Mail/", ("%",))
    assert cmd(b'A002 LSUB "#news." "comp.mail.*"') == g.Lsub("#news.", "comp.mail.*")
    assert cmd(b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)") == g.Status(
        "blurdybloop", ("UIDNEXT", "MESSAGES")
    )
    message = b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\nHello Joe\r\n"
    append = cmd(b"A003 APPEND saved-messages (\\Seen) {%d}\r\n%s" % (len(message), message))
    assert append == g.Append(
        "saved-messages", (g.AppendMessage(("\\Seen",), None, LiteralData(message, False)),)
    )


def test_rfc3501_selected_state_examples() -> None:
    assert cmd(b"FXXZ CHECK") == g.Check()
    assert cmd(b"A341 CLOSE") == g.Close()
    assert cmd(b"A202 EXPUNGE") == g.Expunge()
    assert cmd(b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == g.Search(
        uid=False,
        key=g.AndKey(
            (
                g.FlagKey("\\Flagged"),
                g.DateKey("INTERNALDATE", "SINCE", dt.date(1994, 2, 1)),
                g.NotKey(g.HeaderKey("FROM", "Smith")),
            )
        ),
    )
    assert cmd(b'A283 SEARCH TEXT "string not in mailbox"') == g.Search(
        False, g.TextKey("TEXT", "string not in mailbox")
    )
    assert cmd(b"A284 SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXXXX") == g.Search(
        False, g.TextKey("TEXT", "XXXXXX"), charset="UTF-8"
    )
    fetch = cmd(b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])")
    assert fetch == g.Fetch(
        False,
        g.SequenceSet(((2, 4),)),
        (g.FetchAttr("FLAGS"), g.FetchBody(g.Section((), "HEADER.FIELDS", ("DATE", "FROM")))),
    )
    assert cmd(b"A003 STORE 2:4 +FLAGS (\\Deleted)") == g.Store(
        False, g.SequenceSet(((2, 4),)), "add", ("\\Deleted",)
    )
    assert cmd(b"A003 COPY 2:4 MEETING") == g.Copy(False, g.SequenceSet(((2, 4),)), "MEETING")
    assert cmd(b"A999 UID FETCH 4827313:4828442 FLAGS") == g.Fetch(
        True, g.SequenceSet(((4827313, 4828442),)), (g.FetchAttr("FLAGS"),)
    )


# -- strings, mailboxes, tags ---------------------------------------------------------------


def test_inbox_is_case_insensitive_other_names_are_not() -> None:
    assert cmd(b"a SELECT inbox") == g.Select("INBOX")
    assert cmd(b'a STATUS "InBoX" (MESSAGES)') == g.Status("INBOX", ("MESSAGES",))
    assert cmd(b"a SELECT Inbox/Sub") == g.Select("Inbox/Sub")
    assert cmd(b"a RENAME INBOX Old") == g.Rename("INBOX", "Old")


def test_quoted_strings_escapes_and_literals() -> None:
    assert cmd(b'a LOGIN "fr\\"ed" "a\\\\b"') == g.Login('fr"ed', "a\\b")
    assert cmd(b"a LOGIN {4+}\r\nfred {2}\r\n\xc3\xa9") == g.Login("fred", "é")
    assert cmd(b'a LOGIN "" x') == g.Login("", "x")
    assert "quoted" in error(b'a LOGIN "unterminated').message
    assert "quoted" in error(b'a LOGIN "bad\\escape" x').message


def test_eight_bit_quoted_only_with_utf8_accept() -> None:
    line = 'a SELECT "Entwürfe"'.encode()
    assert "8-bit" in error(line).message
    assert cmd(line, utf8=True) == g.Select("Entwürfe")
    assert "UTF-8" in error(b'a SELECT "\xff"', utf8=True).message
    assert "UTF-8" in error(b"a SELECT {1}\r\n\xff").message


def test_nul_and_literal8_rules() -> None:
    assert "NUL" in error(b"a LOGIN {3}\r\na\x00b x").message
    assert "literal8" in error(b"a LOGIN ~{3}\r\nabc x").message
    appended = cmd(b"a APPEND x ~{3}\r\na\x00b")
    assert isinstance(appended, g.Append)
    assert appended.messages[0].data == LiteralData(b"a\x00b", True)
    assert "literal8" in error(b"a APPEND x {3}\r\na\x00b").message


def test_errors_carry_the_tag() -> None:
    err = error(b"t42 FROBNICATE")
    assert (err.tag, err.status, err.code) == ("t42", "BAD", None)
    assert "unknown command" in err.message
    assert error(b"t1 NOOP extra").tag == "t1"
    assert error(b"t2 SELECT").tag == "t2"
    assert error(b"t3  NOOP").tag == "t3"
    assert error(b"+bad NOOP").tag is None
    assert error(b"NOOP").tag == "NOOP"
    assert error(b"(").tag is None


# -- authentication ------------------------------------------------------------------------


def test_authenticate_with_initial_response() -> None:
    assert cmd(b"a AUTHENTICATE plain AGZyZWQAc2VjcmV0") == g.Authenticate(
        "PLAIN", b"\x00fred\x00secret"
    )
    assert cmd(b"a AUTHENTICATE EXTERNAL =") == g.Authenticate("EXTERNAL", b"")
    assert "base64" in error(b"a AUTHENTICATE PLAIN AGZy!").message


# -- SELECT, CREATE, LIST, STATUS, APPEND ----------------------------------------------------


def test_select_condstore_and_qresync() -> None:
    assert cmd(b"a SELECT INBOX (CONDSTORE)") == g.Select("INBOX", condstore=True)
    full = cmd(
        b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541 (1:10 41:50)))"
    )
    assert full == g.Select(
        "INBOX",
        qresync=g.QResync(
            67890007,
            20050715194045000,
            g.SequenceSet(((41, 41), (43, 211), (214, 541))),
            (g.SequenceSet(((1, 10),)), g.SequenceSet(((41, 50),))),
        ),
    )
    assert cmd(b"a EXAMINE x (QRESYNC (1 2))") == g.Select(
        "x", readonly=True, qresync=g.QResync(1, 2)
    )
    assert cmd(b"a SELECT x (QRESYNC (1 2 (1 5)))") == g.Select(
        "x", qresync=g.QResync(1, 2, None, (g.SequenceSet(((1, 1),)), g.SequenceSet(((5, 5),))))
    )
    assert "parameter" in error(b"a SELECT x (FOO)").message


def test_create_with_special_use() -> None:
    assert cmd(b"a CREATE Drafts (USE (\\drafts))") == g.Create("Drafts", ("\\Drafts",))
    err = error(b"a CREATE Foo (USE (\\Bogus))")
    assert (err.status, err.code) == ("NO", "USEATTR")


def test_list_extended() -> None:
    assert cmd(b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" (a% b*) RETURN (CHILDREN)') == g.List(
        "",
        ("a%", "b*"),
        frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
        frozenset({"CHILDREN"}),
        None,
        True,
    )
    status = cmd(b'a LIST "" % RETURN (SPECIAL-USE STATUS (MESSAGES UNSEEN SIZE))')
    assert status == g.List(
        "", ("%",), frozenset(), frozenset({"SPECIAL-USE"}), ("MESSAGES", "UNSEEN", "SIZE"), True
    )
    assert cmd(b'a LIST () "" x RETURN ()') == g.List("", ("x",), extended=True)
    assert cmd(b"a LIST (special-use remote) x *]") == g.List(
        "x", ("*]",), frozenset({"SPECIAL-USE", "REMOTE"}), extended=True
    )
    assert "RECURSIVEMATCH" in error(b'a LIST (RECURSIVEMATCH REMOTE) "" %').message
    assert "selection option" in error(b'a LIST (imaptest) "" ""').message
    assert "RETURN option" in error(b'a LIST "" "" RETURN (imaptest)').message


def test_status_items() -> None:
    assert cmd(b"a STATUS x (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE)") == (
        g.Status(
            "x",
            ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE"),
        )
    )
    assert "status item" in error(b"a STATUS x (MESSAGES BOGUS)").message
    assert error(b"a STATUS x ()").tag == "a"


def test_append_date_time_and_multiappend() -> None:
    appended = cmd(
        b'a APPEND x (\\Seen \\Draft $Label) "17-Jul-1996 02:44:25 -0700" {1}\r\nA'
        b' " 7-Feb-1994 21:52:25 +0100" {1+}\r\nB {1}\r\nC'
    )
    assert isinstance(appended, g.Append)
    first, second, third = appended.messages
    assert first.flags == ("\\Seen", "\\Draft", "$Label")
    assert first.internal_date == dt.datetime(
        1996, 7, 17, 2, 44, 25, tzinfo=dt.timezone(-dt.timedelta(hours=7))
    )
    assert second.internal_date == dt.datetime(
        1994, 2, 7, 21, 52, 25, tzinfo=dt.timezone(dt.timedelta(hours=1))
    )
    assert (third.flags, third.internal_date, third.data) == ((), None, LiteralData(b"C", False))
    assert "literal" in error(b"a APPEND x").message
    assert "date-time" in error(b'a APPEND x "hello"').message
    assert "literal" in error(b"a APPEND x (\\Seen) hello").message
    assert "date-time" in error(b'a APPEND x "32-Jul-1996 02:44:25 -0700" {1}\r\nA').message


def test_append_streamed_literal() -> None:
    line = CommandLine((b"a APPEND x (\\Seen) ", StreamedLiteral(5000, False), b""))
    request = g.parse_command(line)
    assert isinstance(request.command, g.Append)
    assert request.command.messages[0].data == StreamedLiteral(5000, False)
    elsewhere = CommandLine((b"a LOGIN ", StreamedLiteral(5000, False), b" x"))
    with pytest.raises(g.CommandParseError, match="too large"):
        g.parse_command(elsewhere)


# -- SEARCH ----------------------------------------------------------------------------------


def test_every_rfc3501_search_key() -> None:
    keys = cmd(
        b"a SEARCH ALL ANSWERED BCC b BEFORE 1-Feb-1994 BODY y CC c DELETED DRAFT FLAGGED "
        b'FROM f HEADER X-Extra "" KEYWORD $Foo LARGER 100 NEW NOT SEEN OLD ON "2-Mar-2007" '
        b"OR RECENT SEEN SENTBEFORE 3-apr-2007 SENTON 4-May-2007 SENTSINCE 5-Jun-2007 "
        b"SINCE 6-jul-2007 SMALLER 5 SUBJECT s TEXT t TO u UID 1:* UNANSWERED UNDELETED "
        b"UNDRAFT UNFLAGGED UNKEYWORD $Bar UNSEEN 1,3:* MODSEQ 7"
    )
    assert isinstance(keys, g.Search)
    assert isinstance(keys.key, g.AndKey)
    assert keys.key.keys == (
        g.AllKey(),
        g.FlagKey("\\Answered"),
        g.HeaderKey("BCC", "b"),
        g.DateKey("INTERNALDATE", "BEFORE", dt.date(1994, 2, 1)),
        g.TextKey("BODY", "y"),
        g.HeaderKey("CC", "c"),
        g.FlagKey("\\Deleted"),
        g.FlagKey("\\Draft"),
        g.FlagKey("\\Flagged"),
        g.HeaderKey("FROM", "f"),
        g.HeaderKey("X-EXTRA", ""),
        g.FlagKey("$Foo"),
        g.SizeKey(True, 100),
        g.AndKey((g.FlagKey("\\Recent"), g.FlagKey("\\Seen", False))),
        g.NotKey(g.FlagKey("\\Seen")),
        g.FlagKey("\\Recent", False),
        g.DateKey("INTERNALDATE", "ON", dt.date(2007, 3, 2)),
        g.OrKey(g.FlagKey("\\Recent"), g.FlagKey("\\Seen")),
        g.DateKey("SENT", "BEFORE", dt.date(2007, 4, 3)),
        g.DateKey("SENT", "ON", dt.date(2007, 5, 4)),
        g.DateKey("SENT", "SINCE", dt.date(2007, 6, 5)),
        g.DateKey("INTERNALDATE", "SINCE", dt.date(2007, 7, 6)),
        g.SizeKey(False, 5),
        g.HeaderKey("SUBJECT", "s"),
        g.TextKey("TEXT", "t"),
        g.HeaderKey("TO", "u"),
        g.SequenceKey(g.SequenceSet(((1, None),)), uid=True),
        g.FlagKey("\\Answered", False),
        g.FlagKey("\\Deleted", False),
        g.FlagKey("\\Draft", False),
        g.FlagKey("\\Flagged", False),
        g.FlagKey("$Bar", False),
        g.FlagKey("\\Seen", False),
        g.SequenceKey(g.SequenceSet(((1, 1), (3, None))), uid=False),
        g.ModSeqKey(7),
    )


def test_search_parentheses_nesting_and_depth_limit() -> None:
    assert cmd(b"a SEARCH (3) UID 4") == g.Search(
        False,
        g.AndKey(
            (
                g.SequenceKey(g.SequenceSet(((3, 3),)), False),
                g.SequenceKey(g.SequenceSet(((4, 4),)), True),
            )
        ),
    )
    assert cmd(b"a SEARCH (OR (SEEN) (FLAGGED DRAFT))") == g.Search(
        False,
        g.OrKey(g.FlagKey("\\Seen"), g.AndKey((g.FlagKey("\\Flagged"), g.FlagKey("\\Draft")))),
    )
    assert "nested" in error(b"a SEARCH " + b"NOT " * 200 + b"ALL").message
    assert "nested" in error(b"a SEARCH " + b"(" * 200 + b"ALL" + b")" * 200).message
    assert "search key" in error(b"a SEARCH BOGUS").message
    assert error(b"a SEARCH").tag == "a"
    assert error(b"a SEARCH (ALL").tag == "a"
    assert "date" in error(b"a SEARCH SINCE 31-Feb-2007").message
    assert "date" in error(b"a SEARCH SINCE 1-Foo-2007").message


def test_search_charset_return_modseq_and_saved_result() -> None:
    assert cmd(b"a UID SEARCH RETURN (MIN MAX COUNT ALL SAVE) CHARSET us-ascii $") == g.Search(
        True,
        g.SequenceKey(g.SequenceSet(saved=True), False),
        charset="US-ASCII",
        returns=g.SearchReturn(frozenset({"MIN", "MAX", "COUNT", "ALL", "SAVE"})),
    )
    assert cmd(b"a SEARCH RETURN () ALL") == g.Search(
        False, g.AllKey(), returns=g.SearchReturn(frozenset())
    )
    assert cmd(b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338') == g.Search(
        False, g.ModSeqKey(620162338, "/flags/\\draft", "ALL")
    )
    assert cmd(b"a SEARCH RETURN (PARTIAL -1:-100) ALL") == g.Search(
        False, g.AllKey(), returns=g.SearchReturn(frozenset(), (-1, -100))
    )
    for bad in (b"1", b"1:*", b"*:1"):
        assert error(b"a SEARCH RETURN (PARTIAL " + bad + b") ALL").tag == "a"
    err = error(b"t SEARCH CHARSET ISO-8859-1 TEXT x")
    assert (err.tag, err.status, err.code) == ("t", "NO", "BADCHARSET (US-ASCII UTF-8)")
    assert "RETURN option" in error(b"a SEARCH RETURN (UPDATE) ALL").message


# -- FETCH, STORE, COPY, MOVE, EXPUNGE --------------------------------------------------------


def test_fetch_macros_and_simple_items() -> None:
    fast = (g.FetchAttr("FLAGS"), g.FetchAttr("INTERNALDATE"), g.FetchAttr("RFC822.SIZE"))
    one = g.SequenceSet(((1, 1),))
    assert cmd(b"a FETCH 1 fast") == g.Fetch(False, one, fast)
    assert cmd(b"a FETCH 1 ALL") == g.Fetch(False, one, (*fast, g.FetchAttr("ENVELOPE")))
    assert cmd(b"a FETCH 1 FULL") == g.Fetch(
        False, one, (*fast, g.FetchAttr("ENVELOPE"), g.FetchAttr("BODY"))
    )
    items = cmd(
        b"a FETCH 1 (ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT "
        b"BODY BODYSTRUCTURE UID MODSEQ)"
    )
    assert isinstance(items, g.Fetch)
    assert [i.response_name for i in items.items] == [
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
    ]
    assert "data item" in error(b"a FETCH 1 (FLAGS BOGUS)").message
    assert error(b"a FETCH 1 (ALL)").tag == "a"  # macros only stand alone


def test_fetch_sections_and_partials() -> None:
    fetched = cmd(
        b"a FETCH 1 (BODY[] BODY.PEEK[TEXT]<0.3> body[1.2.MIME] BODY[1.header.fields.not "
        b'(date "X-Foo")] BODY[2.TEXT] BODY[3] BINARY[] BINARY.PEEK[5]<10.10> BINARY.SIZE[2.1])'
    )
    assert isinstance(fetched, g.Fetch)
    assert fetched.items == (
        g.FetchBody(g.Section()),
        g.FetchBody(g.Section((), "TEXT"), peek=True, partial=(0, 3)),
        g.FetchBody(g.Section((1, 2), "MIME")),
        g.FetchBody(g.Section((1,), "HEADER.FIELDS.NOT", ("date", "X-Foo"))),
        g.FetchBody(g.Section((2,), "TEXT")),
        g.FetchBody(g.Section((3,))),
        g.FetchBinary(),
        g.FetchBinary((5,), peek=True, partial=(10, 10)),
        g.FetchBinarySize((2, 1)),
    )
    assert [i.response_name for i in fetched.items] == [
        "BODY[]",
        "BODY[TEXT]<0>",
        "BODY[1.2.MIME]",
        "BODY[1.HEADER.FIELDS.NOT (date X-Foo)]",
        "BODY[2.TEXT]",
        "BODY[3]",
        "BINARY[]",
        "BINARY[5]<10>",
        "BINARY.SIZE[2.1]",
    ]
    assert "section" in error(b"a FETCH 1 BODY[MIME]").message
    assert "section" in error(b"a FETCH 1 BODY[FOO]").message
    assert error(b"a FETCH 1 BODY[0]").tag == "a"
    assert error(b"a FETCH 1 BODY[]<1.0>").tag == "a"
    assert error(b"a FETCH 1 BINARY[TEXT]").tag == "a"


def test_fetch_item_names_outside_ascii_are_refused() -> None:
    assert error("a FETCH 1 BODYé".encode()).tag == "a"
    assert error("a FETCH 1 (FLAGS ÉNVELOPE)".encode()).tag == "a"
    assert error("a FETCH 1 BODY[HEADER.FIELDSé (Subject)]".encode()).tag == "a"


def test_fetch_modifiers() -> None:
    assert cmd(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)") == g.Fetch(
        True, g.SequenceSet(((1, None),)), (g.FetchAttr("FLAGS"),), 12345, True
    )
    assert "VANISHED" in error(b"a UID FETCH 1:* FLAGS (VANISHED)").message
    assert "modifier" in error(b"a FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)").message


def test_store_forms() -> None:
    one = g.SequenceSet(((1, 1),))
    assert cmd(b"a STORE 1 FLAGS \\seen") == g.Store(False, one, "replace", ("\\Seen",))
    assert cmd(b"a STORE 1 -FLAGS.SILENT (\\Deleted $Junk)") == g.Store(
        False, one, "remove", ("\\Deleted", "$Junk"), silent=True
    )
    assert cmd(b"a STORE 1 +FLAGS NIL") == g.Store(False, one, "add", ("NIL",))
    assert cmd(b"a STORE 1 FLAGS ()") == g.Store(False, one, "replace", ())
    assert cmd(b"a UID STORE 5 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)") == g.Store(
        True, g.SequenceSet(((5, 5),)), "add", ("\\Deleted",), True, 320162338
    )
    assert error(b"a STORE 1 LABELS (x)").tag == "a"
    assert error(b"a STORE 1 FLAGS (\\Seen").tag == "a"


def test_copy_move_expunge() -> None:
    assert cmd(b"a UID COPY 1:3 Trash") == g.Copy(True, g.SequenceSet(((1, 3),)), "Trash")
    assert cmd(b"a MOVE 2 inbox") == g.Move(False, g.SequenceSet(((2, 2),)), "INBOX")
    assert cmd(b"a UID MOVE $ x") == g.Move(True, g.SequenceSet(saved=True), "x")
    assert cmd(b"a UID EXPUNGE 3000:3002") == g.Expunge(g.SequenceSet(((3000, 3002),)))
    assert error(b"a UID EXPUNGE").tag == "a"
    assert "not a command" in error(b"a UID NOOP").message


# -- SORT, THREAD, ENABLE, ID, others -----------------------------------------------------------


def test_sort_and_esort() -> None:
    assert cmd(b"a UID SORT (REVERSE ARRIVAL displayfrom SUBJECT) UTF-8 SINCE 1-Feb-1994") == (
        g.Sort(
            True,
            (
                g.SortCriterion("ARRIVAL", True),
                g.SortCriterion("DISPLAYFROM"),
                g.SortCriterion("SUBJECT"),
            ),
            "UTF-8",
            g.DateKey("INTERNALDATE", "SINCE", dt.date(1994, 2, 1)),
        )
    )
    assert cmd(b"a SORT RETURN (MIN COUNT) (DATE) us-ascii 1:5") == g.Sort(
        False,
        (g.SortCriterion("DATE"),),
        "US-ASCII",
        g.SequenceKey(g.SequenceSet(((1, 5),)), False),
        g.SearchReturn(frozenset({"MIN", "COUNT"})),
    )
    assert "sort key" in error(b"a SORT (BOGUS) UTF-8 ALL").message
    assert error(b"a SORT (DATE) ALL").status == "NO"  # ALL read as a charset
    assert error(b"a SORT (REVERSE) UTF-8 ALL").tag == "a"


def test_thread() -> None:
    assert cmd(b"a THREAD REFERENCES UTF-8 ALL") == g.Thread(
        False, "REFERENCES", "UTF-8", g.AllKey()
    )
    assert cmd(b"a UID THREAD orderedsubject us-ascii SEEN") == g.Thread(
        True, "ORDEREDSUBJECT", "US-ASCII", g.FlagKey("\\Seen")
    )
    assert "algorithm" in error(b"a THREAD REFS UTF-8 ALL").message


def test_enable_id_namespace_idle_unselect() -> None:
    assert cmd(b"a ENABLE condstore qresync") == g.Enable(("CONDSTORE", "QRESYNC"))
    assert error(b"a ENABLE").tag == "a"
    assert cmd(b'a ID ("name" "sodr" "version" NIL)') == g.Id((("name", "sodr"), ("version", None)))
    assert cmd(b"a ID NIL") == g.Id(None)
    assert cmd(b"a ID ()") == g.Id(())
    assert cmd(b"a NAMESPACE") == g.Namespace()
    assert cmd(b"a IDLE") == g.Idle()
    assert cmd(b"a UNSELECT") == g.Unselect()
    assert error(b"a GETQUOTA x").tag == "a"


# -- sequence sets ---------------------------------------------------------------------------


def test_sequence_set_resolution() -> None:
    assert seq("1:3,7").resolve(10) == ((1, 3), (7, 7))
    assert seq("3:1").resolve(10) == ((1, 3),)
    assert seq("*").resolve(10) == ((10, 10),)
    assert seq("*:4,2,3").resolve(6) == ((2, 6),)
    # RFC 3501 §6.4.8: n:* includes the largest value even when n is larger.
    assert seq("559:*").resolve(300) == ((300, 559),)
    assert seq("1:*").resolve(0) == ((1, 1),)
    assert seq("*").resolve(0) == ()
    assert seq("1:4294967295").resolve(5) == ((1, 4294967295),)
    assert seq("2,4:5").contains(4, 9) and not seq("2,4:5").contains(3, 9)
    assert list(seq("5:*,1").values(6)) == [1, 5, 6]
    assert str(seq("1:3,*,5:*")) == "1:3,*,5:*"
    with pytest.raises(ValueError):
        g.SequenceSet(saved=True).resolve(3)
    assert error(b"a FETCH 0 UID").tag == "a"
    assert error(b"a FETCH 4294967296 UID").tag == "a"
    assert error(b"a FETCH 1, UID").tag == "a"
