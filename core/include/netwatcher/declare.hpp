// netwatcher SDK: events and metric families declared once, filled by handle.
//
// A plugin declares each event as a struct of typed fields and each metric
// family as a typed handle, as members of the plugin class. The declarations
// produce the schemas and specs of PluginDescription, and the same objects
// fill events and update families: there are no field-index enums to keep in
// step with a schema, no positional value vectors, and no look-ups by name
// that can return nullptr.
//
//   class NicPlugin {
//     EventSet events_;
//     struct Throughput : EventDecl {
//       explicit Throughput(EventSet& set) : EventDecl(set, "nic_throughput", "traffic of a queue")
//       {} Label<std::string> interface{*this, "interface", "interface name", {.width = 12}};
//       Field<std::uint64_t> bytes{*this, "bytes", "frame bytes", {.unit = "bytes"}};
//     } throughput_{events_};
//
//     MetricSet metrics_;
//     Counter bytes_total_{metrics_, "netwatcher_nic_bytes_total", "Frame bytes.", {"interface"}};
//
//     PluginDescription describe() const {
//       PluginDescription d;
//       d.events = events_.schemas();
//       d.metrics = metrics_.specs();
//       ...
//     }
//     Status start(PluginHost& host) { return metrics_.bind(host); }
//     Status collect(EventEmitter& out) {
//       throughput_.row(out).set(throughput_.interface, name).set(throughput_.bytes, n).emit();
//       bytes_total_.mirror({name}, n);
//       ...
//     }
//   };
//
// Order is declaration order: events are numbered as they are constructed,
// fields in the order they appear in their struct (a base class's or a member
// struct's fields first, so shared field groups compose). Every declaration
// object belongs to the plugin object, is built in its constructor and must
// not be copied or moved (the types refuse to be); they are used from the
// host's one plugin thread (describe() may run on another thread before
// start(), and only reads them).
//
// Types are checked at compile time: a Field<std::uint64_t> takes unsigned
// integers only (a negative or floating value needs an explicit cast),
// Field<std::int64_t> signed integers, Field<double> any arithmetic value,
// Field<bool> bool, Field<std::string> text. Using a field of one event on a
// row of another is caught when the row is emitted: the row is dropped and
// counted as a decode error, never sent with values in the wrong columns.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "netwatcher/config.hpp"
#include "netwatcher/event.hpp"
#include "netwatcher/metrics.hpp"
#include "netwatcher/status.hpp"

namespace netwatcher {

class PluginHost;
class EventDecl;

// The events of one plugin, in PluginDescription::events order.
class EventSet {
 public:
  EventSet() = default;
  EventSet(const EventSet&) = delete;
  EventSet& operator=(const EventSet&) = delete;

  // The schemas for PluginDescription::events. Allocates; throws bad_alloc.
  std::vector<EventSchema> schemas() const;
  std::size_t size() const noexcept { return events_.size(); }

 private:
  friend class EventDecl;
  std::vector<const EventDecl*> events_;
};

// Everything about a field but its name, description and type.
struct FieldOptions {
  std::string unit;  // base unit ("bytes", "microseconds"), kAddressUnit, or empty
  FieldRole role = FieldRole::value;
  int width = 0;          // column width hint; 0 = derived
  bool optional = false;  // may be absent in an event (left unset on the row)
  AnomalyRole anomaly = AnomalyRole::none;
};

namespace detail {
template <class T>
constexpr FieldType field_type_of() {
  if constexpr (std::is_same_v<T, std::uint64_t>)
    return FieldType::u64;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return FieldType::i64;
  else if constexpr (std::is_same_v<T, double>)
    return FieldType::f64;
  else if constexpr (std::is_same_v<T, bool>)
    return FieldType::boolean;
  else
    return FieldType::text;
}

template <class T>
concept FieldValueType = std::is_same_v<T, std::uint64_t> || std::is_same_v<T, std::int64_t> ||
    std::is_same_v<T, double> || std::is_same_v<T, bool> || std::is_same_v<T, std::string>;

// Characters are text, not numbers, even where the language calls them
// integers. (signed and unsigned char are the byte integers __s8 and __u8 of
// BPF records: numbers.)
template <class U>
concept CharacterType = std::is_same_v<U, char> || std::is_same_v<U, wchar_t> ||
    std::is_same_v<U, char8_t> || std::is_same_v<U, char16_t> || std::is_same_v<U, char32_t>;

template <class U>
concept Unsigned = std::unsigned_integral<std::remove_cvref_t<U>> &&
                   !std::is_same_v<std::remove_cvref_t<U>, bool> &&
                   !CharacterType<std::remove_cvref_t<U>>;

template <class U>
concept Signed =
    std::signed_integral<std::remove_cvref_t<U>> && !CharacterType<std::remove_cvref_t<U>>;

// What a Field<T> accepts without a cast: no change of sign, no truncation of
// a fraction, no number taken for a bool or a bool for a number, no
// character for a number, no null pointer for text.
template <class T, class U>
concept AssignableTo = (std::is_same_v<T, std::uint64_t> && Unsigned<U>) ||
                       (std::is_same_v<T, std::int64_t> && Signed<U>) ||
                       (std::is_same_v<T, double> &&
                        (Unsigned<U> || Signed<U> ||
                         std::is_floating_point_v<std::remove_cvref_t<U>>)) ||
                       (std::is_same_v<T, bool> && std::is_same_v<std::remove_cvref_t<U>, bool>) ||
                       (std::is_same_v<T, std::string> && std::is_constructible_v<std::string, U> &&
                        !std::is_same_v<std::remove_cvref_t<U>, std::nullptr_t>);
}  // namespace detail

// One event type. Derive a struct from it, with Field / Label members.
class EventDecl {
 public:
  EventDecl(EventSet& set, std::string name, std::string description);
  EventDecl(const EventDecl&) = delete;
  EventDecl& operator=(const EventDecl&) = delete;

  const EventSchema& schema() const noexcept { return schema_; }
  // Position in the plugin's events: the index EventEmitter::emit() takes.
  std::size_t index() const noexcept { return index_; }

  class Row;
  // A row of absent values from `out` (recycled storage, see
  // EventEmitter::make_values). Valid while `out` is, i.e. during the
  // decode() or collect() call that was given `out`.
  Row row(EventEmitter& out) const;

 private:
  template <class T>
  friend class Field;
  std::size_t add_field(FieldSchema field);

  EventSchema schema_;
  std::size_t index_ = 0;
};

// A typed field of an EventDecl; `T` is one of std::uint64_t, std::int64_t,
// double, bool, std::string.
template <class T>
class Field {
  static_assert(detail::FieldValueType<T>, "a field holds u64, i64, double, bool or std::string");

 public:
  Field(EventDecl& event, std::string name, std::string description, FieldOptions options = {})
      : event_(&event),
        index_(event.add_field(FieldSchema{std::move(name), detail::field_type_of<T>(),
                                           std::move(options.unit), std::move(description),
                                           options.role, options.width, options.optional,
                                           options.anomaly})) {}
  Field(const Field&) = delete;
  Field& operator=(const Field&) = delete;

  std::size_t index() const noexcept { return index_; }
  const EventDecl& event() const noexcept { return *event_; }

 protected:
  Field(EventDecl& event, std::string name, std::string description, FieldOptions options,
        FieldRole role)
      : Field(event, std::move(name), std::move(description), with_role(std::move(options), role)) {
  }

 private:
  static FieldOptions with_role(FieldOptions options, FieldRole role) {
    options.role = role;
    return options;
  }
  const EventDecl* event_;
  std::size_t index_;
};

// A field that identifies (address, port, pid, name): FieldRole::label.
template <class T>
class Label : public Field<T> {
 public:
  Label(EventDecl& event, std::string name, std::string description, FieldOptions options = {})
      : Field<T>(event, std::move(name), std::move(description), std::move(options),
                 FieldRole::label) {}
};

// The optional `cgroup_id` label the host resolves to cgroup, container and
// pod labels (kCgroupIdField in event.hpp). Set it only when the id is known
// (non-zero); an unset one leaves every appended label absent.
class CgroupIdLabel : public Label<std::uint64_t> {
 public:
  explicit CgroupIdLabel(EventDecl& event)
      : Label<std::uint64_t>(event, kCgroupIdField,
                             "cgroup2 id of the socket or process (named by the host)",
                             {.width = 9, .optional = true}) {}
};

// Free text (a path, a query): FieldRole::text, always std::string.
class Text : public Field<std::string> {
 public:
  Text(EventDecl& event, std::string name, std::string description, FieldOptions options = {})
      : Field<std::string>(event, std::move(name), std::move(description), std::move(options),
                           FieldRole::text) {}
};

// The values of one event being filled. Fields not set stay absent, which
// the host accepts for optional fields only (an unset required field makes
// the event a decode error). Move-only; emit() once.
class EventDecl::Row {
 public:
  // A moved-from row emits nothing.
  Row(Row&& other) noexcept
      : event_(other.event_),
        out_(other.out_),
        values_(std::move(other.values_)),
        foreign_field_(other.foreign_field_),
        emitted_(std::exchange(other.emitted_, true)) {}
  Row& operator=(Row&&) = delete;

  template <class T, class U>
  requires detail::AssignableTo<T, U> Row& set(const Field<T>& field, U&& value) {
    if (&field.event() != event_) {
      foreign_field_ = true;
      return *this;
    }
    if (field.index() < values_.size()) {
      if constexpr (std::is_same_v<T, std::string>)
        values_[field.index()] = std::string(std::forward<U>(value));
      else
        values_[field.index()] = static_cast<T>(value);
    }
    return *this;
  }

  // Hands the event to the host. `monotonic_ns` as for EventEmitter::emit():
  // CLOCK_MONOTONIC (a record's timestamp), 0 for now.
  void emit(std::uint64_t monotonic_ns = 0);

 private:
  friend class EventDecl;
  Row(const EventDecl& event, EventEmitter& out);

  const EventDecl* event_;
  EventEmitter* out_;
  std::vector<Value> values_;
  bool foreign_field_ = false;
  bool emitted_ = false;
};

// ---- Config keys --------------------------------------------------------
//
// Each key is declared once, as a typed member beside the events and metric
// families:
//
//   KeySet keys_;
//   Setting<bool> events_on_{keys_, "events", true, "emit a nic_throughput event ..."};
//   Setting<std::uint32_t> max_flows_{keys_, "max_flows", 16384, "flows tracked at once",
//                                     {.min = 64, .max = 1 << 22}};
//
//   describe():  d.config = keys_.keys();
//   configure(): if (Status s = keys_.read(config); !s) return s;  then *max_flows_
//
// Until read() a setting holds its default, so a plugin used before
// configure() (or in a unit test) sees the declared defaults. The host has
// validated every value against the declaration (type, range, choices) before
// configure() runs, so read() fails only for a ConfigValues that did not come
// from the host's validation of keys(): the failure names the key.

class SettingBase;

// The config keys of one plugin, in PluginDescription::config order.
class KeySet {
 public:
  KeySet() = default;
  KeySet(const KeySet&) = delete;
  KeySet& operator=(const KeySet&) = delete;

  // The keys for PluginDescription::config. Allocates; throws bad_alloc.
  std::vector<ConfigKey> keys() const;
  // Takes every declared key's value from `values` (configure()'s argument).
  // On failure the settings read before the bad one keep their new values.
  Status read(const ConfigValues& values) noexcept;

 private:
  friend class SettingBase;
  std::vector<SettingBase*> settings_;
};

// Range and choices of a key; min/max for integer types (unsigned ones are at
// least 0 whether or not min says so), choices for std::string.
struct SettingOptions {
  std::optional<std::int64_t> min;
  std::optional<std::int64_t> max;
  std::vector<std::string> choices;
};

class SettingBase {
 public:
  SettingBase(const SettingBase&) = delete;
  SettingBase& operator=(const SettingBase&) = delete;
  const ConfigKey& key() const noexcept { return key_; }

 protected:
  SettingBase(KeySet& set, ConfigKey key) : key_(std::move(key)) { set.settings_.push_back(this); }
  ~SettingBase() = default;

 private:
  friend class KeySet;
  virtual Status take(const ConfigValue& value) = 0;
  ConfigKey key_;
};

namespace detail {
template <class T>
concept SettingInteger = std::integral<T> && !std::is_same_v<T, bool> && !CharacterType<T>;

template <class T>
constexpr ConfigType config_type_of() {
  if constexpr (std::is_same_v<T, bool>)
    return ConfigType::boolean;
  else if constexpr (SettingInteger<T>)
    return ConfigType::integer;
  else if constexpr (std::is_floating_point_v<T>)
    return ConfigType::floating;
  else if constexpr (std::is_same_v<T, std::string>)
    return ConfigType::string;
  else if constexpr (std::is_same_v<T, std::vector<std::string>>)
    return ConfigType::string_list;
  else
    return ConfigType::integer_list;
}

template <class T>
concept SettingType = std::is_same_v<T, bool> || SettingInteger<T> || std::is_same_v<T, double> ||
    std::is_same_v<T, std::string> || std::is_same_v<T, std::vector<std::string>> ||
    std::is_same_v<T, std::vector<std::int64_t>>;

// What the host stores for a key of type T.
template <class T>
using StoredSetting = std::conditional_t<SettingInteger<T>, std::int64_t, T>;
}  // namespace detail

// One config key and, after KeySet::read(), its value. `T` is bool, an
// integer type (the value is checked against T's range as well as min/max),
// double, std::string, std::vector<std::string> or std::vector<std::int64_t>.
template <class T>
class Setting final : public SettingBase {
  static_assert(detail::SettingType<T>,
                "a setting holds bool, an integer, double, std::string or a list of strings or "
                "of int64");

 public:
  Setting(KeySet& set, std::string name, T default_value, std::string description,
          SettingOptions options = {})
      : SettingBase(set, make_key(std::move(name), default_value, std::move(description),
                                  std::move(options))),
        value_(std::move(default_value)) {}

  const T& operator*() const noexcept { return value_; }
  const T* operator->() const noexcept { return &value_; }
  const T& value() const noexcept { return value_; }

 private:
  static ConfigKey make_key(std::string name, const T& default_value, std::string description,
                            SettingOptions options) {
    ConfigKey key{std::move(name), detail::config_type_of<T>(),
                  detail::StoredSetting<T>(default_value), std::move(description)};
    if constexpr (detail::SettingInteger<T>) {
      // The narrower of T's range and the declared one.
      const std::int64_t lowest =
          std::is_signed_v<T> ? static_cast<std::int64_t>(std::numeric_limits<T>::min()) : 0;
      const std::int64_t highest =
          std::numeric_limits<T>::max() > static_cast<std::uint64_t>(INT64_MAX)
              ? INT64_MAX
              : static_cast<std::int64_t>(std::numeric_limits<T>::max());
      key.min = std::max(options.min.value_or(lowest), lowest);
      key.max = std::min(options.max.value_or(highest), highest);
      if (!options.min && lowest == INT64_MIN) key.min.reset();
      if (!options.max && highest == INT64_MAX) key.max.reset();
    } else if constexpr (std::is_same_v<T, std::vector<std::int64_t>>) {
      key.min = options.min;
      key.max = options.max;
    }
    key.choices = std::move(options.choices);
    return key;
  }

  Status take(const ConfigValue& value) override {
    const auto* stored = std::get_if<detail::StoredSetting<T>>(&value);
    if (!stored)
      return Status::failure("config key '" + key().name + "' does not hold " +
                             config_type_name(key().type));
    value_ = static_cast<T>(*stored);
    return Status::success();
  }

  T value_;
};

class MetricHandle;

// The metric families of one plugin, in PluginDescription::metrics order.
class MetricSet {
 public:
  MetricSet() = default;
  MetricSet(const MetricSet&) = delete;
  MetricSet& operator=(const MetricSet&) = delete;

  // The specs for PluginDescription::metrics. Allocates; throws bad_alloc.
  std::vector<MetricFamilySpec> specs() const;
  // Connects every handle to the host's family of its name. Call from
  // start(); fails, naming the family, if the host has none (it registers
  // every declared family, so that means a description other than specs()).
  // Before bind() and after a failed one, handles accept updates and drop
  // them.
  Status bind(PluginHost& host) noexcept;

 private:
  friend class MetricHandle;
  std::vector<MetricHandle*> handles_;
};

// Common part of Counter, Gauge and Histogram: never null, thread-safe like
// MetricFamily (the host's families are).
class MetricHandle {
 public:
  MetricHandle(const MetricHandle&) = delete;
  MetricHandle& operator=(const MetricHandle&) = delete;

  const MetricFamilySpec& spec() const noexcept { return spec_; }
  // Drops one series, e.g. of a connection that is gone.
  void remove(const LabelValues& labels) const noexcept { family_->remove(labels); }

 protected:
  MetricHandle(MetricSet& set, MetricFamilySpec spec);
  MetricFamily& family() const noexcept { return *family_; }

 private:
  friend class MetricSet;
  MetricFamilySpec spec_;
  MetricFamily* family_;
};

class Counter : public MetricHandle {
 public:
  Counter(MetricSet& set, std::string name, std::string help, std::vector<std::string> labels = {})
      : MetricHandle(
            set, {std::move(name), MetricType::counter, std::move(help), std::move(labels), {}}) {}
  void add(const LabelValues& labels, double delta = 1) const noexcept {
    family().add(labels, delta);
  }
  // Mirrors an absolute, monotonic count kept elsewhere (a BPF map); a value
  // lower than the last is ignored.
  void mirror(const LabelValues& labels, double total) const noexcept {
    family().set(labels, total);
  }
};

class Gauge : public MetricHandle {
 public:
  Gauge(MetricSet& set, std::string name, std::string help, std::vector<std::string> labels = {})
      : MetricHandle(
            set, {std::move(name), MetricType::gauge, std::move(help), std::move(labels), {}}) {}
  void set(const LabelValues& labels, double value) const noexcept { family().set(labels, value); }
  void add(const LabelValues& labels, double delta) const noexcept { family().add(labels, delta); }
};

class Histogram : public MetricHandle {
 public:
  // `buckets`: upper bounds, ascending; +Inf is implied.
  Histogram(MetricSet& set, std::string name, std::string help, std::vector<std::string> labels,
            std::vector<double> buckets)
      : MetricHandle(set, {std::move(name), MetricType::histogram, std::move(help),
                           std::move(labels), std::move(buckets)}) {}
  void observe(const LabelValues& labels, double value) const noexcept {
    family().observe(labels, value);
  }
  // Replaces the series with counts aggregated elsewhere: one non-cumulative
  // count per bucket plus one for +Inf.
  void replace(const LabelValues& labels, std::span<const std::uint64_t> bucket_counts,
               double sum) const noexcept {
    family().set_histogram(labels, bucket_counts, sum);
  }
};

}  // namespace netwatcher
