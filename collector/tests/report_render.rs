//! The inspection report in a real headless Chromium (Debian's `chromium`): printed to
//! PDF with `render_pdf` (A4, several pages) and screenshot to PNG pages whose charts must
//! be drawn. The PNGs are kept under the target's tmp folder for a person to look at.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aftercare_collector::report::model;
use aftercare_collector::report::render::{Templates, find_chromium, render_html, render_pdf};

#[path = "../src/report/render/sample.rs"]
#[allow(dead_code)]
mod sample;

/// A4 at 150 dpi: one page of the screenshot.
const PAGE: (u32, u32) = (1240, 1754);
/// The trend line's colour (charts.rs `LINE`).
const LINE: [u8; 3] = [0x2b, 0x6c, 0xb0];

fn chromium() -> PathBuf {
    find_chromium().expect(
        "no Chromium found: the report is printed by headless Chromium. Install Debian's \
         package (`apt-get install chromium`) or set CHROME",
    )
}

fn html(lang: &str) -> String {
    render_html(&sample::report(lang), &Templates::builtin()).expect("render")
}

#[test]
fn the_report_prints_to_a_multi_page_a4_pdf() {
    let pdf = render_pdf(&html("en"), Some(&chromium())).expect("PDF");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-en.pdf");
    std::fs::write(out, &pdf).unwrap();
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    let text = String::from_utf8_lossy(&pdf);
    // `/Type /Pages` is the page tree; the pages are `/Type /Page` not followed by `s`.
    let pages = text
        .match_indices("/Type /Page")
        .filter(|(i, m)| text.as_bytes().get(i + m.len()) != Some(&b's'))
        .count();
    assert!(
        pages >= 5,
        "{pages} pages: each of the five sections starts a page"
    );
    // A4 is 595 x 842 points, on every page.
    let boxes: Vec<Vec<f64>> = text
        .split("/MediaBox [")
        .skip(1)
        .map(|b| {
            b.split(']')
                .next()
                .unwrap()
                .split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(boxes.len(), pages);
    for b in boxes {
        assert!(
            (b[2] - 595.0).abs() < 1.0 && (b[3] - 842.0).abs() < 1.0,
            "not A4: {b:?}"
        );
    }
}

#[test]
fn the_report_screenshots_to_pages_with_drawn_charts() {
    let chrome = chromium();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-render");
    std::fs::create_dir_all(&dir).unwrap();
    for lang in ["en", "zh-CN"] {
        let page = dir.join(format!("report-{lang}.html"));
        std::fs::write(&page, html(lang)).unwrap();
        // The whole document in one tall window, then cut into A4-sized pages.
        let shot = dir.join(format!("report-{lang}.png"));
        let _ = std::fs::remove_file(&shot);
        run_bounded(
            Command::new(&chrome)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                ])
                .arg(format!(
                    "--user-data-dir={}",
                    dir.join(format!("profile-{lang}")).display()
                ))
                .arg(format!("--screenshot={}", shot.display()))
                .arg(format!("--window-size={},{}", PAGE.0, PAGE.1 * 8))
                .arg(format!("file://{}", page.display())),
            Duration::from_secs(60),
        );
        let (width, height, rgb) = decode(&shot);
        assert_eq!(width, PAGE.0);
        let pages: Vec<&[u8]> = rgb.chunks(PAGE.0 as usize * PAGE.1 as usize * 3).collect();
        assert!(pages.len() >= 4, "{lang}: {height} px tall");
        let mut line_pixels = 0;
        for (i, p) in pages.iter().enumerate() {
            let colours: HashSet<&[u8]> = p.chunks(3).step_by(5).collect();
            let line = p.chunks(3).filter(|px| near(px, LINE)).count();
            line_pixels += line;
            if i == 0 {
                assert!(
                    colours.len() > 20,
                    "{lang}: the title page has {} colours",
                    colours.len()
                );
            }
            write_png(&dir.join(format!("report-{lang}-page{}.png", i + 1)), p);
        }
        // Nine trend charts, each a line across most of a 700 px plot.
        assert!(
            line_pixels > 9 * 500,
            "{lang}: only {line_pixels} pixels of chart lines"
        );
    }
}

fn near(px: &[u8], c: [u8; 3]) -> bool {
    px.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 24)
}

/// Runs `cmd`, killing it if it outlives `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Chromium");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "Chromium: {status}");
            return;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Chromium took more than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The PNG's size and its pixels as RGB.
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let samples = info.color_type.samples();
    assert!(
        info.bit_depth == png::BitDepth::Eight && samples >= 3,
        "{info:?}"
    );
    let rgb = buf[..info.buffer_size()]
        .chunks(samples)
        .flat_map(|px| px[..3].to_vec())
        .collect();
    (info.width, info.height, rgb)
}

fn write_png(path: &Path, rgb: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let height = (rgb.len() / 3 / PAGE.0 as usize) as u32;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), PAGE.0, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(rgb)
        .unwrap();
}

#[test]
fn a_missing_chromium_says_what_to_install() {
    let err = render_pdf("<p>hi</p>", Some(Path::new("/nonexistent/chromium")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("apt-get install chromium") && err.contains("/nonexistent/chromium"),
        "{err}"
    );
}
