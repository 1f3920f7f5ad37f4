//! Stories of issue 21, item 5: protocol traces for one user — start, the active set frontends
//! poll, appending lines (and dropped counts), reading, stop, and expiry deleting the lines, on
//! both backends.

use super::*;

const T0: i64 = 1_800_000_000_000;

fn line(trace: TraceId, session: &str, at: i64, direction: Direction, text: &str) -> NewTraceLine {
    NewTraceLine {
        trace,
        line: TraceLine {
            session: session.into(),
            at,
            direction,
            text: text.into(),
        },
    }
}

async fn a_trace_records_lines_for_its_user_only(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@a.example").await;
    user(&*s, "jane@a.example").await;
    assert!(s.active_traces(T0).await.expect("active").is_empty());

    let info = s
        .start_trace(&addr("john@a.example"), "admin@example.net", 10, T0)
        .await
        .expect("start");
    assert_eq!(info.user, john);
    assert_eq!(info.until, T0 + 600_000);
    assert!(info.recording(T0));
    let active = s.active_traces(T0 + 1).await.expect("active");
    assert_eq!(
        active,
        vec![ActiveTrace {
            trace: info.id,
            user: john,
            address: "john@a.example".into(),
        }]
    );

    s.append_trace_lines(
        &[
            line(
                info.id,
                "n1-1",
                T0 + 5,
                Direction::Client,
                "USER john@a.example",
            ),
            line(info.id, "n1-1", T0 + 6, Direction::Server, "+OK send PASS"),
            line(
                info.id,
                "n1-1",
                T0 + 7,
                Direction::Client,
                "PASS <redacted>",
            ),
        ],
        &[(info.id, 4)],
    )
    .await
    .expect("append");
    s.append_trace_lines(
        &[line(info.id, "n2-9", T0 + 8, Direction::Client, "STAT")],
        &[(info.id, 1)],
    )
    .await
    .expect("append");

    let (read, lines) = s
        .user_trace(&addr("john@a.example"), T0 + 10)
        .await
        .expect("read")
        .expect("john has a trace");
    assert_eq!(read.started_by, "admin@example.net");
    assert_eq!(read.dropped, 5);
    let texts: Vec<(&str, Direction, &str)> = lines
        .iter()
        .map(|l| (l.session.as_str(), l.direction, l.text.as_str()))
        .collect();
    assert_eq!(
        texts,
        vec![
            ("n1-1", Direction::Client, "USER john@a.example"),
            ("n1-1", Direction::Server, "+OK send PASS"),
            ("n1-1", Direction::Client, "PASS <redacted>"),
            ("n2-9", Direction::Client, "STAT"),
        ]
    );
    assert_eq!(lines[0].at, T0 + 5);
    assert!(
        s.user_trace(&addr("jane@a.example"), T0 + 10)
            .await
            .expect("read")
            .is_none()
    );
    // Out of range.
    for minutes in [0, 61] {
        assert!(matches!(
            s.start_trace(&addr("jane@a.example"), "admin", minutes, T0)
                .await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert!(matches!(
        s.start_trace(&addr("nobody@a.example"), "admin", 5, T0)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn a_stopped_trace_stays_readable_and_a_new_one_replaces_it(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    user(&*s, "john@a.example").await;
    let john = addr("john@a.example");
    let first = s.start_trace(&john, "cli", 60, T0).await.expect("start");
    s.append_trace_lines(&[line(first.id, "s", T0, Direction::Client, "CAPA")], &[])
        .await
        .expect("append");
    assert!(s.stop_trace(&john, T0 + 1000).await.expect("stop"));
    assert!(!s.stop_trace(&john, T0 + 2000).await.expect("stop again"));
    assert!(s.active_traces(T0 + 1001).await.expect("active").is_empty());
    let (info, lines) = s
        .user_trace(&john, T0 + 1001)
        .await
        .expect("read")
        .expect("still there");
    assert_eq!(info.stopped_at, Some(T0 + 1000));
    assert!(!info.recording(T0 + 1001));
    assert_eq!(lines.len(), 1);

    let second = s
        .start_trace(&john, "cli", 5, T0 + 5000)
        .await
        .expect("restart");
    assert_ne!(second.id, first.id);
    // Lines a frontend still had queued for the replaced trace are ignored.
    s.append_trace_lines(
        &[line(first.id, "s", T0, Direction::Client, "NOOP")],
        &[(first.id, 3)],
    )
    .await
    .expect("append to a gone trace");
    let (info, lines) = s
        .user_trace(&john, T0 + 5001)
        .await
        .expect("read")
        .expect("new trace");
    assert_eq!(info.id, second.id);
    assert_eq!(info.dropped, 0);
    assert!(lines.is_empty(), "{lines:?}");
}

async fn expired_traces_are_deleted_with_their_lines(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    user(&*s, "john@a.example").await;
    user(&*s, "jane@a.example").await;
    let john = addr("john@a.example");
    let jane = addr("jane@a.example");
    let short = s.start_trace(&john, "cli", 1, T0).await.expect("start");
    let long = s.start_trace(&jane, "cli", 30, T0).await.expect("start");
    s.append_trace_lines(
        &[
            line(short.id, "s", T0, Direction::Client, "USER john"),
            line(long.id, "t", T0, Direction::Client, "USER jane"),
        ],
        &[],
    )
    .await
    .expect("append");
    let expiry = T0 + 60_000;
    // Past its end a trace is neither recorded nor shown, deleted or not.
    let active = s.active_traces(expiry).await.expect("active");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].trace, long.id);
    assert!(s.user_trace(&john, expiry).await.expect("read").is_none());

    assert_eq!(
        s.delete_expired_traces(expiry - 1).await.expect("delete"),
        0
    );
    assert_eq!(s.delete_expired_traces(expiry).await.expect("delete"), 1);
    assert_eq!(s.delete_expired_traces(expiry).await.expect("delete"), 0);
    // Its lines went with it: even a reader that ignores the expiry finds nothing.
    assert!(s.user_trace(&john, T0).await.expect("read").is_none());
    let (_, lines) = s
        .user_trace(&jane, expiry)
        .await
        .expect("read")
        .expect("jane's trace is kept");
    assert_eq!(lines.len(), 1);
    // Removing a user removes their trace.
    s.remove_user(&jane).await.expect("remove");
    assert!(s.active_traces(expiry).await.expect("active").is_empty());
}

stories!(
    a_trace_records_lines_for_its_user_only,
    a_stopped_trace_stays_readable_and_a_new_one_replaces_it,
    expired_traces_are_deleted_with_their_lines,
);
