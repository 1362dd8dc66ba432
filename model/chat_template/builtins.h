// SPDX-License-Identifier: Apache-2.0
// Object model of the interpreter: attribute and item access, slicing, the Python str/dict methods
// templates call, and the global functions HF provides (range, namespace, dict, raise_exception,
// strftime_now). Mirrors jinja2's ImmutableSandboxedEnvironment: mutating methods such as
// list.append are refused, as they are in transformers.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/chat_template/value.h"

namespace lychee::jinja {

// raise_exception() uses this code internally so the message reaches the caller unprefixed; the
// renderer turns it into InvalidArgument.
inline constexpr absl::StatusCode kRaisedCode = absl::StatusCode::kAborted;

// An error for using an undefined value where jinja2 raises UndefinedError.
absl::Status UndefinedError(const Value& undefined);

// obj.name: dict keys, namespace attributes and bound methods; missing attributes are undefined.
absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name);
// obj[key]: list/string indexing (negative allowed) and dict lookup; missing items are undefined.
absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);
// obj[start:stop:step] with Python semantics on lists and strings; unset bounds are undefined.
absl::StatusOr<Value> GetSlice(const Value& obj, const Value& start, const Value& stop,
                               const Value& step);

// Adds range, namespace, dict, raise_exception and strftime_now to `globals`. Every namespace()
// created is also appended to `namespaces` so the renderer can clear them afterwards: they are the
// only mutable objects, hence the only way to build reference cycles.
void AddGlobalFunctions(ValueDict* globals, std::vector<Value>* namespaces);

// Items of an iterable as a for loop sees them (dict -> keys, string -> characters).
absl::StatusOr<ValueList> Iterate(const Value& v);

}  // namespace lychee::jinja
