use super::*;
use crate::catalog::timeline::parse_history;

const MB16: u64 = 16 << 20;

fn lsn(text: &str) -> Lsn {
    text.parse().unwrap()
}

fn span(id: &str, start: &str, stop: &str, timeline: u32) -> Span {
    let position = |text: &str| Position {
        lsn: lsn(text),
        timeline,
        time: format!("time of {id}"),
    };
    Span {
        id: id.into(),
        start: position(start),
        stop: position(stop),
    }
}

fn segments(present: &[(u32, u64)]) -> Segments {
    Segments {
        segment_size: MB16,
        present: present.iter().copied().collect(),
    }
}

fn timeline_1(range: std::ops::Range<u64>) -> Vec<(u32, u64)> {
    range.map(|s| (1, s)).collect()
}

#[test]
fn a_whole_archive_reaches_from_the_backups_end_to_the_last_segment() {
    let path = Path::new(1, &[]);
    let wal = segments(&timeline_1(2..9));
    let window = window(&path, &wal, &[span("A", "0/2000028", "0/3000100", 1)]);
    assert_eq!(window.unreachable, []);
    assert_eq!(window.reachable.len(), 1);
    let range = &window.reachable[0];
    assert_eq!(range.from.lsn, lsn("0/3000100"));
    assert_eq!(range.from.backup.as_deref(), Some("A"));
    assert_eq!(range.to.lsn, lsn("0/9000000"));
}

#[test]
fn a_missing_segment_cuts_off_everything_up_to_the_next_backups_end() {
    let path = Path::new(1, &[]);
    let mut present = timeline_1(2..12);
    present.retain(|(_, s)| *s != 5);
    let wal = segments(&present);
    let spans = [
        span("A", "0/2000028", "0/3000100", 1),
        span("B", "0/8000028", "0/8000100", 1),
    ];
    let window = window(&path, &wal, &spans);
    assert_eq!(window.reachable.len(), 2);
    assert_eq!(window.reachable[0].to.lsn, lsn("0/5000000"));
    assert_eq!(window.reachable[1].from.lsn, lsn("0/8000100"));
    assert_eq!(window.reachable[1].to.lsn, lsn("0/C000000"));
    assert_eq!(window.unreachable.len(), 1);
    let gap = &window.unreachable[0];
    assert_eq!(gap.from.lsn, lsn("0/5000000"));
    assert_eq!(gap.to.backup.as_deref(), Some("B"));
    assert_eq!(gap.missing.len(), 1);
    assert_eq!(gap.missing[0].first, "000000010000000000000005");
    assert_eq!(gap.missing[0].count, 1);
}

#[test]
fn without_a_later_backup_the_gap_runs_to_the_end_of_the_archive() {
    let path = Path::new(1, &[]);
    let mut present = timeline_1(2..12);
    present.retain(|(_, s)| !(5..=6).contains(s));
    let window = window(
        &path,
        &segments(&present),
        &[span("A", "0/2000028", "0/3000100", 1)],
    );
    assert_eq!(window.unreachable.len(), 1);
    let gap = &window.unreachable[0];
    assert_eq!(
        (gap.from.lsn, gap.to.lsn),
        (lsn("0/5000000"), lsn("0/C000000"))
    );
    assert_eq!(
        gap.missing[0].to_string(),
        "000000010000000000000005 to 000000010000000000000006 (2 segments)"
    );
}

#[test]
fn a_backup_missing_its_own_wal_reaches_nothing() {
    let path = Path::new(1, &[]);
    let present = [(1, 2), (1, 4), (1, 5)];
    let a = span("A", "0/2000028", "0/4000100", 1);
    let wal = segments(&present);
    assert_eq!(wal.reach(&path, &a), Reach::Broken(3));
    let window = window(&path, &wal, &[a]);
    assert_eq!(window.reachable, []);
    let gap = &window.unreachable[0];
    assert_eq!(
        (gap.from.lsn, gap.to.lsn),
        (lsn("0/4000100"), lsn("0/6000000"))
    );
    assert_eq!(gap.missing[0].first, "000000010000000000000003");
}

#[test]
fn a_new_timeline_is_followed_from_its_switch_segment() {
    // Timeline 2 branched in segment 5: timeline 1 left a .partial of it
    // (not a segment recovery reads), timeline 2 has 5 and 6.
    let history = parse_history("1\t0/5000100\tpromoted\n").unwrap();
    let mut present = timeline_1(2..5);
    present.extend([(2, 5), (2, 6)]);
    let wal = segments(&present);
    let a = span("A", "0/2000028", "0/3000100", 1);
    let on_2 = window(&Path::new(2, &history), &wal, std::slice::from_ref(&a));
    assert_eq!(on_2.unreachable, []);
    assert_eq!(on_2.reachable[0].to.lsn, lsn("0/7000000"));
    let on_1 = window(&Path::new(1, &[]), &wal, std::slice::from_ref(&a));
    assert_eq!(on_1.reachable[0].to.lsn, lsn("0/5000000"));
    // A backup taken on timeline 2 is not on timeline 1's path.
    let b = span("B", "0/6000028", "0/6000100", 2);
    assert!(!on_path(&Path::new(1, &[]), &b));
    assert!(on_path(&Path::new(2, &history), &b));
    // Without timeline 2's first segment, its path has a hole there.
    let mut holed = wal.clone();
    holed.present.remove(&(2, 5));
    let gaps = window(&Path::new(2, &history), &holed, &[a]).unreachable;
    assert_eq!(gaps[0].missing[0].first, "000000020000000000000005");
}

#[test]
fn no_backup_on_a_path_means_no_window() {
    let wal = segments(&timeline_1(2..5));
    assert_eq!(window(&Path::new(1, &[]), &wal, &[]), Window::default());
}
