#include "tune/results_store.h"

#include <sqlite3.h>

#include <chrono>

#include <fmt/format.h>

namespace moenav::tune {
namespace {

using nlohmann::json;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS points (
  model_hash TEXT NOT NULL, hardware TEXT NOT NULL, workload TEXT NOT NULL,
  config_key TEXT NOT NULL, config TEXT NOT NULL, label TEXT NOT NULL,
  status TEXT NOT NULL, error TEXT NOT NULL, measurement TEXT NOT NULL, predicted TEXT NOT NULL,
  created REAL NOT NULL,
  PRIMARY KEY (model_hash, hardware, workload, config_key));
CREATE TABLE IF NOT EXISTS quality (
  model_hash TEXT NOT NULL, workload TEXT NOT NULL, quality_key TEXT NOT NULL, config TEXT NOT NULL,
  status TEXT NOT NULL, error TEXT NOT NULL, ppl REAL, scored_tokens INTEGER NOT NULL,
  seconds REAL NOT NULL, experts_per_token REAL,
  PRIMARY KEY (model_hash, workload, quality_key));
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, model_hash TEXT NOT NULL, model_path TEXT NOT NULL,
  hardware TEXT NOT NULL, workload TEXT NOT NULL, goal TEXT NOT NULL, mode TEXT NOT NULL,
  result TEXT NOT NULL, started REAL NOT NULL, finished REAL NOT NULL);
CREATE TABLE IF NOT EXISTS descriptions (
  kind TEXT NOT NULL, key TEXT NOT NULL, description TEXT NOT NULL, PRIMARY KEY (kind, key));
)sql";

// One prepared statement, finalized on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) { status_ = sqlite3_prepare_v2(db, sql, -1, &statement_, nullptr); }
  ~Statement() { sqlite3_finalize(statement_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  bool prepared() const { return status_ == SQLITE_OK; }

  Statement& bind(int index, const std::string& text) {
    sqlite3_bind_text(statement_, index, text.c_str(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind(int index, double value) {
    if (std::isnan(value)) sqlite3_bind_null(statement_, index);
    else sqlite3_bind_double(statement_, index, value);
    return *this;
  }
  Statement& bind(int index, int64_t value) {
    sqlite3_bind_int64(statement_, index, value);
    return *this;
  }
  int step() { return sqlite3_step(statement_); }
  std::string text(int column) const {
    const unsigned char* value = sqlite3_column_text(statement_, column);
    return value ? reinterpret_cast<const char*>(value) : "";
  }
  double real(int column) const {
    return sqlite3_column_type(statement_, column) == SQLITE_NULL ? NAN : sqlite3_column_double(statement_, column);
  }
  int64_t integer(int column) const { return sqlite3_column_int64(statement_, column); }

 private:
  sqlite3_stmt* statement_ = nullptr;
  int status_ = SQLITE_ERROR;
};

json parse_or_null(const std::string& text) {
  json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return value.is_discarded() ? json(nullptr) : value;
}

constexpr const char* kPointColumns =
    "model_hash, hardware, workload, config_key, config, label, status, error, measurement, predicted, created";

StoredPoint read_point(const Statement& row) {
  StoredPoint point;
  point.model_hash = row.text(0);
  point.hardware = row.text(1);
  point.workload = row.text(2);
  point.config_key = row.text(3);
  point.config = parse_or_null(row.text(4));
  point.label = row.text(5);
  point.status = row.text(6);
  point.error = row.text(7);
  point.measurement = Measurement::from_json(parse_or_null(row.text(8)));
  point.predicted = parse_or_null(row.text(9));
  point.created = row.real(10);
  return point;
}

constexpr const char* kQualityColumns =
    "model_hash, workload, quality_key, config, status, error, ppl, scored_tokens, seconds, experts_per_token";

StoredQuality read_quality(const Statement& row) {
  StoredQuality quality;
  quality.model_hash = row.text(0);
  quality.workload = row.text(1);
  quality.quality_key = row.text(2);
  quality.config = parse_or_null(row.text(3));
  quality.status = row.text(4);
  quality.error = row.text(5);
  quality.ppl = row.real(6);
  quality.scored_tokens = row.integer(7);
  quality.seconds = row.real(8);
  quality.experts_per_token = row.real(9);
  return quality;
}

}  // namespace

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Expected<std::unique_ptr<ResultsStore>> ResultsStore::open(const std::string& path) {
  std::unique_ptr<ResultsStore> store(new ResultsStore());
  store->path_ = path;
  if (sqlite3_open(path.c_str(), &store->db_) != SQLITE_OK) {
    return Status::errorf("{}: cannot open results database: {}", path,
                          store->db_ ? sqlite3_errmsg(store->db_) : "out of memory");
  }
  sqlite3_busy_timeout(store->db_, 10000);  // another tune or report on the same file
  // WAL + NORMAL: a committed point survives kill -9 of this process.
  MOENAV_RETURN_IF_ERROR(store->execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"));
  MOENAV_RETURN_IF_ERROR(store->execute(kSchema).with_context(path + ": not a moenav results database?"));
  return store;
}

ResultsStore::~ResultsStore() { sqlite3_close(db_); }

Status ResultsStore::execute(const std::string& sql) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    Status status = Status::errorf("{}: {}", path_, message ? message : "sqlite error");
    sqlite3_free(message);
    return status;
  }
  return ok_status();
}

Status ResultsStore::put_point(const StoredPoint& point) {
  Statement statement(db_, fmt::format("INSERT OR REPLACE INTO points ({}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                                       kPointColumns).c_str());
  if (!statement.prepared()) return Status::errorf("{}: {}", path_, sqlite3_errmsg(db_));
  statement.bind(1, point.model_hash).bind(2, point.hardware).bind(3, point.workload)
      .bind(4, point.config_key).bind(5, point.config.dump()).bind(6, point.label)
      .bind(7, point.status).bind(8, point.error).bind(9, point.measurement.to_json().dump())
      .bind(10, point.predicted.dump()).bind(11, point.created);
  if (statement.step() != SQLITE_DONE) return Status::errorf("{}: cannot store a point: {}", path_, sqlite3_errmsg(db_));
  return ok_status();
}

std::optional<StoredPoint> ResultsStore::find_point(const std::string& model_hash, const std::string& hardware,
                                                    const std::string& workload, const std::string& config_key) {
  Statement statement(db_, fmt::format("SELECT {} FROM points WHERE model_hash=? AND hardware=? AND "
                                       "workload=? AND config_key=?", kPointColumns).c_str());
  statement.bind(1, model_hash).bind(2, hardware).bind(3, workload).bind(4, config_key);
  if (statement.step() != SQLITE_ROW) return std::nullopt;
  return read_point(statement);
}

std::vector<StoredPoint> ResultsStore::points(const std::string& model_hash, const std::string& hardware,
                                              const std::string& workload) {
  Statement statement(db_, fmt::format("SELECT {} FROM points WHERE model_hash=? AND (?='' OR hardware=?) "
                                       "AND (?='' OR workload=?) ORDER BY created", kPointColumns).c_str());
  statement.bind(1, model_hash).bind(2, hardware).bind(3, hardware).bind(4, workload).bind(5, workload);
  std::vector<StoredPoint> out;
  while (statement.step() == SQLITE_ROW) out.push_back(read_point(statement));
  return out;
}

Status ResultsStore::put_quality(const StoredQuality& quality) {
  Statement statement(db_, fmt::format("INSERT OR REPLACE INTO quality ({}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                                       kQualityColumns).c_str());
  statement.bind(1, quality.model_hash).bind(2, quality.workload).bind(3, quality.quality_key)
      .bind(4, quality.config.dump()).bind(5, quality.status).bind(6, quality.error)
      .bind(7, quality.ppl).bind(8, quality.scored_tokens).bind(9, quality.seconds)
      .bind(10, quality.experts_per_token);
  if (statement.step() != SQLITE_DONE) return Status::errorf("{}: cannot store a perplexity: {}", path_, sqlite3_errmsg(db_));
  return ok_status();
}

std::optional<StoredQuality> ResultsStore::find_quality(const std::string& model_hash, const std::string& workload,
                                                        const std::string& quality_key) {
  Statement statement(db_, fmt::format("SELECT {} FROM quality WHERE model_hash=? AND workload=? AND quality_key=?",
                                       kQualityColumns).c_str());
  statement.bind(1, model_hash).bind(2, workload).bind(3, quality_key);
  if (statement.step() != SQLITE_ROW) return std::nullopt;
  return read_quality(statement);
}

std::vector<StoredQuality> ResultsStore::qualities(const std::string& model_hash) {
  Statement statement(db_, fmt::format("SELECT {} FROM quality WHERE model_hash=?", kQualityColumns).c_str());
  statement.bind(1, model_hash);
  std::vector<StoredQuality> out;
  while (statement.step() == SQLITE_ROW) out.push_back(read_quality(statement));
  return out;
}

Expected<int64_t> ResultsStore::begin_run(const StoredRun& run) {
  Statement statement(db_, "INSERT INTO runs (model_hash, model_path, hardware, workload, goal, mode, result, "
                           "started, finished) VALUES (?,?,?,?,?,?,?,?,0)");
  statement.bind(1, run.model_hash).bind(2, run.model_path).bind(3, run.hardware).bind(4, run.workload)
      .bind(5, run.goal).bind(6, run.mode).bind(7, run.result.dump()).bind(8, unix_seconds());
  if (statement.step() != SQLITE_DONE) return Status::errorf("{}: cannot record the run: {}", path_, sqlite3_errmsg(db_));
  return static_cast<int64_t>(sqlite3_last_insert_rowid(db_));
}

Status ResultsStore::finish_run(int64_t id, const json& result) {
  Statement statement(db_, "UPDATE runs SET result=?, finished=? WHERE id=?");
  statement.bind(1, result.dump()).bind(2, unix_seconds()).bind(3, id);
  if (statement.step() != SQLITE_DONE) return Status::errorf("{}: cannot finish the run: {}", path_, sqlite3_errmsg(db_));
  return ok_status();
}

std::vector<StoredRun> ResultsStore::runs() {
  Statement statement(db_, "SELECT id, model_hash, model_path, hardware, workload, goal, mode, result, started, "
                           "finished FROM runs ORDER BY id DESC");
  std::vector<StoredRun> out;
  while (statement.step() == SQLITE_ROW) {
    StoredRun run;
    run.id = statement.integer(0);
    run.model_hash = statement.text(1);
    run.model_path = statement.text(2);
    run.hardware = statement.text(3);
    run.workload = statement.text(4);
    run.goal = statement.text(5);
    run.mode = statement.text(6);
    run.result = parse_or_null(statement.text(7));
    run.started = statement.real(8);
    run.finished = statement.real(9);
    out.push_back(std::move(run));
  }
  return out;
}

Status ResultsStore::put_description(const std::string& kind, const std::string& key, const json& description) {
  Statement statement(db_, "INSERT OR REPLACE INTO descriptions (kind, key, description) VALUES (?,?,?)");
  statement.bind(1, kind).bind(2, key).bind(3, description.dump());
  if (statement.step() != SQLITE_DONE) return Status::errorf("{}: {}", path_, sqlite3_errmsg(db_));
  return ok_status();
}

std::optional<json> ResultsStore::description(const std::string& kind, const std::string& key) {
  Statement statement(db_, "SELECT description FROM descriptions WHERE kind=? AND key=?");
  statement.bind(1, kind).bind(2, key);
  if (statement.step() != SQLITE_ROW) return std::nullopt;
  return parse_or_null(statement.text(0));
}

}  // namespace moenav::tune
