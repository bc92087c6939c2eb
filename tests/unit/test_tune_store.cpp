// The results store: points and perplexities survive closing the database (a killed tune resumes
// from them), keys separate models, machines and workloads, and a file that is not a database is
// an error, not a crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tune/results_store.h"

namespace moenav::tune {
namespace {

std::string temp_db(const std::string& name) {
  const std::string path = (std::filesystem::temp_directory_path() / ("moenav_test_" + name + ".db")).string();
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  return path;
}

StoredPoint sample_point(const std::string& key, double tpot) {
  StoredPoint point;
  point.model_hash = "m1";
  point.hardware = "h1";
  point.workload = R"({"prompt_tokens":64})";
  point.config_key = key;
  point.config = {{"routing", {{"top_k", 1}}}};
  point.label = "k=1";
  point.status = "ok";
  point.measurement.ttft_s = 0.1;
  point.measurement.tpot_s = tpot;
  point.measurement.gen_tokens = 16;
  point.measurement.peak_rss_bytes = 123456;
  point.predicted = {{"tpot_s", tpot * 1.1}};
  point.created = unix_seconds();
  return point;
}

TEST(TuneStore, PointsPersistAcrossReopen) {
  const std::string path = temp_db("persist");
  {
    auto store = ResultsStore::open(path);
    ASSERT_TRUE(store.ok()) << store.error();
    ASSERT_TRUE((*store)->put_point(sample_point(R"({"routing.top_k":1})", 0.01)).ok());
    ASSERT_TRUE((*store)->put_point(sample_point(R"({"routing.top_k":3})", 0.02)).ok());
  }  // closed as a killed process would leave it: every put was already committed
  auto store = ResultsStore::open(path);
  ASSERT_TRUE(store.ok()) << store.error();
  auto found = (*store)->find_point("m1", "h1", R"({"prompt_tokens":64})", R"({"routing.top_k":1})");
  ASSERT_TRUE(found.has_value());
  EXPECT_DOUBLE_EQ(found->measurement.tpot_s, 0.01);
  EXPECT_EQ(found->measurement.peak_rss_bytes, 123456);
  EXPECT_DOUBLE_EQ(found->predicted["tpot_s"].get<double>(), 0.011);
  EXPECT_FALSE((*store)->find_point("m2", "h1", R"({"prompt_tokens":64})", R"({"routing.top_k":1})").has_value());
  EXPECT_FALSE((*store)->find_point("m1", "h2", R"({"prompt_tokens":64})", R"({"routing.top_k":1})").has_value());
  EXPECT_FALSE((*store)->find_point("m1", "h1", R"({"prompt_tokens":512})", R"({"routing.top_k":1})").has_value());
  EXPECT_EQ((*store)->points("m1").size(), 2u);
  EXPECT_EQ((*store)->points("m1", "h1", R"({"prompt_tokens":64})").size(), 2u);
  // Replacing a point keeps one row.
  ASSERT_TRUE((*store)->put_point(sample_point(R"({"routing.top_k":1})", 0.015)).ok());
  EXPECT_EQ((*store)->points("m1").size(), 2u);
}

TEST(TuneStore, QualityRunsAndDescriptions) {
  const std::string path = temp_db("quality");
  auto store = ResultsStore::open(path);
  ASSERT_TRUE(store.ok()) << store.error();
  StoredQuality quality;
  quality.model_hash = "m1";
  quality.workload = "w";
  quality.quality_key = R"({"routing.top_k":1})";
  quality.status = "ok";
  quality.ppl = 7.5;
  quality.scored_tokens = 1022;
  ASSERT_TRUE((*store)->put_quality(quality).ok());
  auto found = (*store)->find_quality("m1", "w", R"({"routing.top_k":1})");
  ASSERT_TRUE(found.has_value());
  EXPECT_DOUBLE_EQ(found->ppl, 7.5);
  EXPECT_TRUE(std::isnan(found->experts_per_token));

  StoredRun run;
  run.model_hash = "m1";
  run.goal = "min latency";
  run.mode = "default";
  auto id = (*store)->begin_run(run);
  ASSERT_TRUE(id.ok()) << id.error();
  EXPECT_EQ((*store)->runs().front().finished, 0.0);
  ASSERT_TRUE((*store)->finish_run(*id, {{"points", nlohmann::json::array()}}).ok());
  EXPECT_GT((*store)->runs().front().finished, 0.0);
  EXPECT_TRUE((*store)->runs().front().result.contains("points"));

  ASSERT_TRUE((*store)->put_description("model", "m1", {{"path", "x"}}).ok());
  EXPECT_EQ((*(*store)->description("model", "m1"))["path"], "x");
  EXPECT_FALSE((*store)->description("model", "m9").has_value());
}

TEST(TuneStore, NotADatabase) {
  const std::string path = temp_db("garbage");
  std::ofstream(path) << "this is not an SQLite file, it is a sentence long enough to fill a header page......";
  auto store = ResultsStore::open(path);
  EXPECT_FALSE(store.ok());
  EXPECT_NE(store.error().find(path), std::string::npos) << store.error();
  auto missing_dir = ResultsStore::open("/nonexistent-dir/results.db");
  EXPECT_FALSE(missing_dir.ok());
}

}  // namespace
}  // namespace moenav::tune
