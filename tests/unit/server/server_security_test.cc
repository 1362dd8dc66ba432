// SPDX-License-Identifier: Apache-2.0
// server/security: bearer-token checks, key files, request ownership and random request ids.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "server/security/api_keys.h"
#include "server/security/request_owners.h"

namespace lychee::security {
namespace {

TEST(ApiKeysTest, ChecksBearerTokensAndNamesTheKey) {
  const ApiKeys keys({"alpha-key", "beta-key"});
  EXPECT_TRUE(keys.enabled());
  EXPECT_EQ(keys.Check("alpha-key"), "key#0");
  EXPECT_EQ(keys.Check("beta-key"), "key#1");
  EXPECT_EQ(keys.Check("alpha-ke"), std::nullopt);
  EXPECT_EQ(keys.Check("alpha-keyy"), std::nullopt);
  EXPECT_EQ(keys.Check(""), std::nullopt);
  EXPECT_EQ(keys.CheckAuthorization("Bearer beta-key"), "key#1");
  EXPECT_EQ(keys.CheckAuthorization("bearer   alpha-key  "), "key#0");
  EXPECT_EQ(keys.CheckAuthorization("Basic alpha-key"), std::nullopt);
  EXPECT_EQ(keys.CheckAuthorization("Bearer"), std::nullopt);
  EXPECT_EQ(keys.CheckAuthorization("alpha-key"), std::nullopt);
  EXPECT_EQ(keys.CheckAuthorization(""), std::nullopt);
  EXPECT_FALSE(ApiKeys().enabled());
  EXPECT_EQ(ApiKeys().Check("anything"), std::nullopt);
}

TEST(ApiKeysTest, KeyFile) {
  auto keys = ParseApiKeyFile("# comment\n k1 \r\n\n\tk2\n# k3\n");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*keys, (std::vector<std::string>{"k1", "k2"}));
  auto bad = ParseApiKeyFile("ok\nnot ok\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 2"), absl::string_view::npos);
  EXPECT_FALSE(IsValidApiKey(""));
  EXPECT_FALSE(IsValidApiKey("a\x01"));
  EXPECT_FALSE(IsValidApiKey(std::string(5000, 'a')));
  EXPECT_TRUE(IsValidApiKey("sk-abc_DEF.123"));
}

TEST(RequestOwnersTest, OnlyTheOwnerWhileTheClaimLives) {
  RequestOwners owners;
  {
    RequestOwners::Claim claim = owners.Register("req-1", "key#0");
    EXPECT_TRUE(owners.IsOwner("req-1", "key#0"));
    EXPECT_FALSE(owners.IsOwner("req-1", "key#1"));
    EXPECT_FALSE(owners.IsOwner("req-2", "key#0"));
    RequestOwners::Claim moved = std::move(claim);
    EXPECT_TRUE(owners.IsOwner("req-1", "key#0"));
  }
  EXPECT_FALSE(owners.IsOwner("req-1", "key#0"));
  EXPECT_EQ(owners.size(), 0u);
  // A reused id: the older claim's release does not drop the newer owner.
  RequestOwners::Claim first = owners.Register("req-3", "grpc:a");
  RequestOwners::Claim second = owners.Register("req-3", "grpc:b");
  first.Release();
  EXPECT_TRUE(owners.IsOwner("req-3", "grpc:b"));
  second.Release();
  EXPECT_EQ(owners.size(), 0u);
}

TEST(RequestIdTest, RandomAndUnguessable) {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) ids.insert(RandomRequestId("req-"));
  EXPECT_EQ(ids.size(), 1000u);
  const std::string id = *ids.begin();
  EXPECT_EQ(id.rfind("req-", 0), 0u);
  EXPECT_EQ(id.size(), 4u + 32u);
}

TEST(PublicModelNameTest, FolderNameOnly) {
  EXPECT_EQ(PublicModelName("/models/Qwen3-8B/"), "Qwen3-8B");
  EXPECT_EQ(PublicModelName("models/stories260K"), "stories260K");
  EXPECT_EQ(PublicModelName("stories260K"), "stories260K");
  EXPECT_EQ(PublicModelName("synthetic:llama-3-8b"), "synthetic:llama-3-8b");
}

TEST(RejectReasonTest, OneVocabularyForBothFrontEnds) {
  EXPECT_EQ(RejectReasonForHttp(429), RejectReasonFor(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(RejectReasonForHttp(400), RejectReasonFor(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(RejectReasonForHttp(401), RejectReasonFor(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(RejectReasonForHttp(409), RejectReasonFor(absl::StatusCode::kAlreadyExists));
  EXPECT_EQ(RejectReasonForHttp(503), RejectReasonFor(absl::StatusCode::kUnavailable));
  EXPECT_EQ(RejectReasonForHttp(413), "too_large");
  EXPECT_EQ(RejectReasonForHttp(431), "header_too_large");
}

}  // namespace
}  // namespace lychee::security
