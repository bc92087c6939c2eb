// A small SVG chart writer for the offline HTML report: axes with ticks (linear or log), scatter
// series, lines, horizontal stacked bars, a legend, and <title> tooltips. No scripts and no
// external resources, so the report opens anywhere, including headless browsers in CI.
#pragma once

#include <string>
#include <vector>

namespace moenav::report {

std::string escape_html(const std::string& text);

struct Axis {
  std::string label;
  bool log = false;
  double min = 0.0, max = 1.0;  // set by fit() when auto
  bool fixed = false;
  // Fits [min, max] around values (with a margin); keeps a fixed range.
  void fit(const std::vector<double>& values);
};

struct Marker {
  double x = 0.0, y = 0.0;
  std::string color = "#1f77b4";
  std::string shape = "circle";  // circle, ring, square, star, dot, diamond
  double size = 5.0;
  std::string tooltip{};
};

struct Line {
  std::vector<double> x, y;
  std::string color = "#444";
  bool dashed = false;
  double width = 1.5;
  std::string label;
};

struct LegendEntry {
  std::string label, color, shape = "circle";
};

struct Chart {
  std::string title;
  int width = 640, height = 400;
  Axis x, y;
  std::vector<Marker> markers;
  std::vector<Line> lines;
  std::vector<LegendEntry> legend;
  std::vector<std::pair<double, std::string>> x_guides, y_guides;  // dashed bound lines with labels
  std::string note;  // a line under the plot

  std::string svg() const;
};

struct BarSegment {
  double value = 0.0;
  std::string color, label;
};
struct Bar {
  std::string label;
  std::vector<BarSegment> segments;
};
// Horizontal stacked bars (per-stage time), value axis in `unit`.
std::string stacked_bars_svg(const std::string& title, const std::vector<Bar>& bars, const std::string& unit,
                             double scale, int width = 640);

// A color from a sequential scale for t in [0, 1] (green = low/good .. red = high/bad).
std::string sequential_color(double t);
std::string category_color(size_t index);

}  // namespace moenav::report
