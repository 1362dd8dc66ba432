// SPDX-License-Identifier: Apache-2.0
// Rendering of one family in the text exposition format 0.0.4 (see family.h).
#include "server/metrics/family.h"

#include "server/metrics/exposition_text.h"

namespace lychee::metrics {
namespace {

std::string_view TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// `name{labels}` or `name{labels,extra}`; braces are omitted when both are empty.
void AppendSeries(std::string_view name, std::string_view suffix, const std::string& labels,
                  std::string_view extra, std::string& out) {
  out += name;
  out += suffix;
  if (labels.empty() && extra.empty()) return;
  out += '{';
  out += labels;
  if (!labels.empty() && !extra.empty()) out += ',';
  out += extra;
  out += '}';
}

void AppendSample(std::string_view name, std::string_view suffix, const std::string& labels,
                  std::string_view extra, const std::string& value, std::string& out) {
  AppendSeries(name, suffix, labels, extra, out);
  out += ' ';
  out += value;
  out += '\n';
}

}  // namespace

FamilyBase::FamilyBase(std::string name, std::string help, MetricType type,
                       std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)) {}

std::string FamilyBase::FormatLabels(std::span<const std::string> label_values) const {
  std::string out;
  for (size_t i = 0; i < label_values.size(); ++i) {
    if (i > 0) out += ',';
    out += label_names_[i];
    out += "=\"";
    AppendEscapedLabelValue(label_values[i], out);
    out += '"';
  }
  return out;
}

void FamilyBase::Render(std::string& out) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  AppendEscapedHelp(help_, out);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += TypeName(type_);
  out += '\n';
  ForEachChild(
      [&](const std::string& labels, const void* child) { RenderChild(labels, child, out); });
}

void FamilyBase::RenderChild(const std::string& labels, const void* child, std::string& out) const {
  switch (type_) {
    case MetricType::kCounter:
      AppendSample(name_, "", labels, "", FormatValue(static_cast<const Counter*>(child)->Value()),
                   out);
      return;
    case MetricType::kGauge:
      AppendSample(name_, "", labels, "", FormatValue(static_cast<const Gauge*>(child)->Value()),
                   out);
      return;
    case MetricType::kHistogram: {
      const auto* histogram = static_cast<const Histogram*>(child);
      const Histogram::Snapshot snapshot = histogram->Read();
      const std::vector<double>& bounds = histogram->upper_bounds();
      std::string le;
      for (size_t i = 0; i <= bounds.size(); ++i) {
        le = "le=\"";
        le += i < bounds.size() ? FormatValue(bounds[i]) : "+Inf";
        le += '"';
        AppendSample(name_, "_bucket", labels, le, std::to_string(snapshot.cumulative[i]), out);
      }
      AppendSample(name_, "_sum", labels, "", FormatValue(snapshot.sum), out);
      AppendSample(name_, "_count", labels, "", std::to_string(snapshot.count), out);
      return;
    }
  }
}

}  // namespace lychee::metrics
