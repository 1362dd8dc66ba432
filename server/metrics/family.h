// SPDX-License-Identifier: Apache-2.0
// Family<M>: one metric name with its HELP, TYPE and label names, and one child M per distinct
// tuple of label values (created on first use, never removed).
//
// Threading: WithLabels and rendering take the family's mutex for the map lookup only; the
// returned child is recorded into lock-free (metric_types.h). Hot paths should look a child up
// once and keep the reference (it stays valid as long as the registry).
#pragma once

#include <algorithm>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/logging.h"
#include "server/metrics/metric_types.h"

namespace lychee::metrics {

// Common part of every family: identity and the text rendering of its samples.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, MetricType type,
             std::vector<std::string> label_names);
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  // The exposed name: counters carry "_total" (added at registration when absent).
  const std::string& name() const { return name_; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  // Appends "# HELP", "# TYPE" and one line per sample (exposition format 0.0.4).
  void Render(std::string& out) const;

 protected:
  // `labels` is the child's pre-escaped `a="x",b="y"` text (empty without labels).
  virtual void ForEachChild(
      const std::function<void(const std::string& labels, const void* child)>& fn) const = 0;
  // Formats `label_values` as `a="x",b="y"` with escaping.
  std::string FormatLabels(std::span<const std::string> label_values) const;

 private:
  void RenderChild(const std::string& labels, const void* child, std::string& out) const;

  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
};

// Orders label-value tuples so that std::vector<std::string> keys can be found with a list of
// string_views (no allocation on lookups of existing children).
struct LabelValuesLess {
  using is_transparent = void;
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return std::lexicographical_compare(
        a.begin(), a.end(), b.begin(), b.end(),
        [](std::string_view x, std::string_view y) { return x < y; });
  }
};

template <typename M>
class Family final : public FamilyBase {
 public:
  // `make_child` builds a new child (histograms need their bucket bounds).
  Family(std::string name, std::string help, MetricType type, std::vector<std::string> label_names,
         std::function<std::unique_ptr<M>()> make_child)
      : FamilyBase(std::move(name), std::move(help), type, std::move(label_names)),
        make_child_(std::move(make_child)) {
    // A family without labels has exactly one child, exposed from the start (value 0).
    if (this->label_names().empty()) WithLabels({});
  }

  // The child for these label values, in label_names() order. The count must match (a bug
  // otherwise). Values may be any UTF-8 text; they are escaped when rendered.
  M& WithLabels(std::initializer_list<std::string_view> values) {
    return WithLabels(std::span<const std::string_view>(values.begin(), values.size()));
  }
  M& WithLabels(std::span<const std::string_view> values) {
    LY_CHECK(values.size() == label_names().size())
        << name() << ": " << values.size() << " label values for " << label_names().size()
        << " labels";
    std::lock_guard<std::mutex> lock(mu_);
    auto it = children_.find(values);
    if (it == children_.end()) {
      std::vector<std::string> key(values.begin(), values.end());
      Child child{FormatLabels(key), make_child_()};
      it = children_.emplace(std::move(key), std::move(child)).first;
    }
    return *it->second.metric;
  }
  // The only child of a family without labels.
  M& Get() { return WithLabels({}); }

 protected:
  void ForEachChild(
      const std::function<void(const std::string& labels, const void* child)>& fn) const override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [values, child] : children_) fn(child.labels, child.metric.get());
  }

 private:
  struct Child {
    std::string labels;  // pre-formatted `a="x",b="y"`
    std::unique_ptr<M> metric;
  };
  const std::function<std::unique_ptr<M>()> make_child_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, Child, LabelValuesLess> children_;  // sorted: stable output
};

}  // namespace lychee::metrics
