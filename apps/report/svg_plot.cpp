#include "report/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include <fmt/format.h>

namespace moenav::report {
namespace {

constexpr int kLeft = 78, kRight = 170, kTop = 34, kBottom = 52;  // plot margins; legend on the right

// "Nice" tick values covering [min, max].
std::vector<double> linear_ticks(double min, double max) {
  const double span = max - min;
  if (!(span > 0)) return {min};
  const double raw = span / 5.0;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double factor : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (raw <= factor * magnitude) {
      step = factor * magnitude;
      break;
    }
  }
  std::vector<double> ticks;
  for (double t = std::ceil(min / step) * step; t <= max + step * 1e-9; t += step) ticks.push_back(t);
  return ticks;
}

std::vector<double> log_ticks(double min, double max) {
  std::vector<double> ticks;
  for (double decade = std::pow(10.0, std::floor(std::log10(min))); decade <= max; decade *= 10.0) {
    for (double m : {1.0, 2.0, 5.0}) {
      const double t = decade * m;
      if (t >= min && t <= max) ticks.push_back(t);
    }
  }
  if (ticks.size() < 2) return linear_ticks(min, max);
  return ticks;
}

// Enough decimals to tell neighbouring ticks `step` apart.
std::string tick_text(double value, double step) {
  const double a = std::abs(value);
  if (a == 0) return "0";
  if (a >= 1e5 || a < 1e-4) return fmt::format("{:.2g}", value);
  const int decimals = step > 0 ? std::clamp(static_cast<int>(std::ceil(-std::log10(step) + 1e-9)), 0, 6) : 3;
  return fmt::format("{:.{}f}", value, decimals);
}

std::string tick_text(const std::vector<double>& ticks, size_t i, bool log) {
  if (log) return tick_text(ticks[i], ticks[i] / 2.0);
  const double step = ticks.size() > 1 ? ticks[1] - ticks[0] : std::abs(ticks[i]);
  return tick_text(ticks[i], step);
}

struct Frame {
  const Chart& chart;
  double px(double x) const { return map(chart.x, x, kLeft, chart.width - kRight); }
  double py(double y) const { return map(chart.y, y, chart.height - kBottom, kTop); }
  static double map(const Axis& axis, double v, double a, double b) {
    double lo = axis.min, hi = axis.max;
    if (axis.log) {
      lo = std::log10(lo);
      hi = std::log10(hi);
      v = std::log10(std::max(v, 1e-300));
    }
    const double t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
    return a + t * (b - a);
  }
};

std::string marker_svg(const Marker& m, double x, double y) {
  const double s = m.size;
  std::string shape;
  if (m.shape == "ring") {
    shape = fmt::format(R"svg(<circle cx="{:.1f}" cy="{:.1f}" r="{:.1f}" fill="white" stroke="{}" stroke-width="1.5"/>)svg", x, y, s, m.color);
  } else if (m.shape == "square") {
    shape = fmt::format(R"svg(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}" stroke="#222" stroke-width="0.7"/>)svg",
                        x - s, y - s, 2 * s, 2 * s, m.color);
  } else if (m.shape == "diamond") {
    shape = fmt::format(R"svg(<polygon points="{:.1f},{:.1f} {:.1f},{:.1f} {:.1f},{:.1f} {:.1f},{:.1f}" fill="{}" stroke="#222" stroke-width="0.7"/>)svg",
                        x, y - s * 1.3, x + s * 1.3, y, x, y + s * 1.3, x - s * 1.3, y, m.color);
  } else if (m.shape == "star") {
    std::string points;
    for (int i = 0; i < 10; ++i) {
      const double r = i % 2 == 0 ? s * 2.0 : s * 0.85;
      const double angle = -std::numbers::pi / 2 + i * std::numbers::pi / 5;
      points += fmt::format("{:.1f},{:.1f} ", x + r * std::cos(angle), y + r * std::sin(angle));
    }
    shape = fmt::format(R"svg(<polygon points="{}" fill="{}" stroke="#000" stroke-width="1"/>)svg", points, m.color);
  } else if (m.shape == "dot") {
    shape = fmt::format(R"svg(<circle cx="{:.1f}" cy="{:.1f}" r="{:.1f}" fill="{}" opacity="0.55"/>)svg", x, y, s * 0.5, m.color);
  } else {
    shape = fmt::format(R"svg(<circle cx="{:.1f}" cy="{:.1f}" r="{:.1f}" fill="{}" stroke="#222" stroke-width="0.7"/>)svg", x, y, s, m.color);
  }
  if (m.tooltip.empty()) return shape;
  return fmt::format("<g>{}<title>{}</title></g>", shape, escape_html(m.tooltip));
}

}  // namespace

std::string escape_html(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

void Axis::fit(const std::vector<double>& values) {
  if (fixed) return;
  double lo = INFINITY, hi = -INFINITY;
  for (double v : values) {
    if (!std::isfinite(v) || (log && v <= 0)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (!std::isfinite(lo)) {
    lo = log ? 1.0 : 0.0;
    hi = log ? 10.0 : 1.0;
  }
  if (log) {
    min = lo / 1.25;
    max = hi * 1.25;
  } else {
    const double pad = hi > lo ? 0.08 * (hi - lo) : std::max(std::abs(hi) * 0.1, 1e-9);
    min = lo - pad;
    max = hi + pad;
  }
}

std::string Chart::svg() const {
  const Frame f{*this};
  std::string out = fmt::format(R"svg(<svg xmlns="http://www.w3.org/2000/svg" width="{0}" height="{1}" viewBox="0 0 {0} {1}" role="img">)svg",
                                width, height);
  out += fmt::format(R"svg(<text x="{}" y="20" font-size="14" font-weight="bold">{}</text>)svg", kLeft, escape_html(title));
  const double x0 = kLeft, x1 = width - kRight, y0 = height - kBottom, y1 = kTop;
  out += fmt::format(R"svg(<rect x="{}" y="{}" width="{}" height="{}" fill="#fbfbfb" stroke="#999"/>)svg", x0, y1, x1 - x0, y0 - y1);
  const std::vector<double> x_ticks = x.log ? log_ticks(x.min, x.max) : linear_ticks(x.min, x.max);
  for (size_t i = 0; i < x_ticks.size(); ++i) {
    const double t = x_ticks[i];
    const double px = f.px(t);
    out += fmt::format(R"svg(<line x1="{0:.1f}" x2="{0:.1f}" y1="{1}" y2="{2}" stroke="#e3e3e3"/><text x="{0:.1f}" y="{3}" font-size="11" text-anchor="middle">{4}</text>)svg",
                       px, y1, y0, y0 + 15, tick_text(x_ticks, i, x.log));
  }
  const std::vector<double> y_ticks = y.log ? log_ticks(y.min, y.max) : linear_ticks(y.min, y.max);
  for (size_t i = 0; i < y_ticks.size(); ++i) {
    const double t = y_ticks[i];
    const double py = f.py(t);
    out += fmt::format(R"svg(<line x1="{0}" x2="{1}" y1="{2:.1f}" y2="{2:.1f}" stroke="#e3e3e3"/><text x="{3}" y="{4:.1f}" font-size="11" text-anchor="end">{5}</text>)svg",
                       x0, x1, py, x0 - 5, py + 4, tick_text(y_ticks, i, y.log));
  }
  out += fmt::format(R"svg(<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>)svg", (x0 + x1) / 2, height - 14, escape_html(x.label));
  out += fmt::format(R"svg(<text x="16" y="{0}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>)svg",
                     (y0 + y1) / 2, escape_html(y.label));
  for (const auto& [value, label] : x_guides) {
    if (value < x.min || value > x.max) continue;
    out += fmt::format(R"svg(<line x1="{0:.1f}" x2="{0:.1f}" y1="{1}" y2="{2}" stroke="#c0392b" stroke-dasharray="5,4"/><text x="{3:.1f}" y="{4}" font-size="10" fill="#c0392b">{5}</text>)svg",
                       f.px(value), y1, y0, f.px(value) + 3, y1 + 12, escape_html(label));
  }
  for (const auto& [value, label] : y_guides) {
    if (value < y.min || value > y.max) continue;
    out += fmt::format(R"svg(<line x1="{0}" x2="{1}" y1="{2:.1f}" y2="{2:.1f}" stroke="#c0392b" stroke-dasharray="5,4"/><text x="{3}" y="{4:.1f}" font-size="10" fill="#c0392b" text-anchor="end">{5}</text>)svg",
                       x0, x1, f.py(value), x1 - 3, f.py(value) - 3, escape_html(label));
  }
  out += fmt::format(R"svg(<svg x="{}" y="{}" width="{}" height="{}" viewBox="{} {} {} {}" overflow="hidden">)svg", x0, y1, x1 - x0,
                     y0 - y1, x0, y1, x1 - x0, y0 - y1);
  for (const Line& line : lines) {
    std::string points;
    for (size_t i = 0; i < line.x.size() && i < line.y.size(); ++i) {
      if (!std::isfinite(line.x[i]) || !std::isfinite(line.y[i])) continue;
      points += fmt::format("{:.1f},{:.1f} ", f.px(line.x[i]), f.py(line.y[i]));
    }
    out += fmt::format(R"svg(<polyline points="{}" fill="none" stroke="{}" stroke-width="{}"{}/>)svg", points, line.color, line.width,
                       line.dashed ? R"svg( stroke-dasharray="6,4")svg" : "");
  }
  for (const Marker& m : markers) {
    if (!std::isfinite(m.x) || !std::isfinite(m.y)) continue;
    out += marker_svg(m, f.px(m.x), f.py(m.y));
  }
  out += "</svg>";
  double legend_y = y1 + 8;
  for (const LegendEntry& entry : legend) {
    Marker m;
    m.color = entry.color;
    m.shape = entry.shape;
    m.size = 4.5;
    if (entry.shape == "line") {
      out += fmt::format(R"svg(<line x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}" stroke="{}" stroke-width="2"/>)svg", x1 + 12, x1 + 28, legend_y,
                         legend_y, entry.color);
    } else {
      out += marker_svg(m, x1 + 20, legend_y);
    }
    out += fmt::format(R"svg(<text x="{}" y="{:.1f}" font-size="11">{}</text>)svg", x1 + 34, legend_y + 4, escape_html(entry.label));
    legend_y += 18;
  }
  if (!note.empty()) {
    out += fmt::format(R"svg(<text x="{}" y="{}" font-size="10" fill="#555">{}</text>)svg", x0, height - 2, escape_html(note));
  }
  out += "</svg>";
  return out;
}

std::string stacked_bars_svg(const std::string& title, const std::vector<Bar>& bars, const std::string& unit, double scale,
                             int width) {
  constexpr int kLabel = 230, kBarHeight = 18, kGap = 8, kTopMargin = 30;
  double widest = 0.0;
  for (const Bar& bar : bars) {
    double total = 0.0;
    for (const BarSegment& s : bar.segments) total += s.value;
    widest = std::max(widest, total);
  }
  const int legend_height = 52;  // two rows
  const int height = kTopMargin + static_cast<int>(bars.size()) * (kBarHeight + kGap) + legend_height + 20;
  const double usable = width - kLabel - 80;
  std::string out = fmt::format(R"svg(<svg xmlns="http://www.w3.org/2000/svg" width="{0}" height="{1}" viewBox="0 0 {0} {1}" role="img">)svg",
                                width, height);
  out += fmt::format(R"svg(<text x="10" y="18" font-size="14" font-weight="bold">{}</text>)svg", escape_html(title));
  double y = kTopMargin;
  for (const Bar& bar : bars) {
    out += fmt::format(R"svg(<text x="{}" y="{:.0f}" font-size="11" text-anchor="end">{}</text>)svg", kLabel - 6, y + 13, escape_html(bar.label));
    double x = kLabel, total = 0.0;
    for (const BarSegment& s : bar.segments) {
      const double w = widest > 0 ? s.value / widest * usable : 0.0;
      out += fmt::format(R"svg(<g><rect x="{:.1f}" y="{:.0f}" width="{:.1f}" height="{}" fill="{}"/><title>{}: {:.3g} {}</title></g>)svg", x, y,
                         std::max(w, 0.0), kBarHeight, s.color, escape_html(s.label), s.value * scale, unit);
      x += w;
      total += s.value;
    }
    out += fmt::format(R"svg(<text x="{:.1f}" y="{:.0f}" font-size="11">{:.3g} {}</text>)svg", x + 5, y + 13, total * scale, unit);
    y += kBarHeight + kGap;
  }
  if (!bars.empty()) {
    double x = 10;
    for (const BarSegment& s : bars.front().segments) {
      const double item = 28 + 6.2 * static_cast<double>(s.label.size());
      if (x + item > width) {  // next row
        x = 10;
        y += 20;
      }
      out += fmt::format(R"svg(<rect x="{:.0f}" y="{:.0f}" width="12" height="12" fill="{}"/><text x="{:.0f}" y="{:.0f}" font-size="11">{}</text>)svg",
                         x, y + 6, s.color, x + 16, y + 16, escape_html(s.label));
      x += item;
    }
  }
  out += "</svg>";
  return out;
}

std::string sequential_color(double t) {
  t = std::clamp(std::isfinite(t) ? t : 0.5, 0.0, 1.0);
  // green (#1a9850) -> yellow (#fee08b) -> red (#d73027)
  auto mix = [](int a, int b, double u) { return static_cast<int>(std::lround(a + (b - a) * u)); };
  int r, g, b;
  if (t < 0.5) {
    const double u = t / 0.5;
    r = mix(0x1a, 0xfe, u); g = mix(0x98, 0xe0, u); b = mix(0x50, 0x8b, u);
  } else {
    const double u = (t - 0.5) / 0.5;
    r = mix(0xfe, 0xd7, u); g = mix(0xe0, 0x30, u); b = mix(0x8b, 0x27, u);
  }
  return fmt::format("#{:02x}{:02x}{:02x}", r, g, b);
}

std::string category_color(size_t index) {
  static const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return kColors[index % (sizeof(kColors) / sizeof(kColors[0]))];
}

}  // namespace moenav::report
