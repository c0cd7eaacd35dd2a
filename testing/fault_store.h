// FaultInjectingStore: forwards to a real MetadataStore, counts the items
// it scans, and can make
// commits fail as if the process died just before the metadata transaction
// committed. Because providers make data durable before the engine commits
// metadata, an injected failure leaves exactly the state a crash between
// "data written" and "metadata written" leaves.
#ifndef MESHSYNC_TESTING_FAULT_STORE_H_
#define MESHSYNC_TESTING_FAULT_STORE_H_

#include <memory>

#include "meshsync/metadata_store.h"

namespace meshsync::testing {

class FaultInjectingStore final : public MetadataStore {
 public:
  explicit FaultInjectingStore(std::unique_ptr<MetadataStore> base) : base_(std::move(base)) {}

  // The commit after `successes` more successful ones fails (once).
  void FailCommitAfter(int successes) { fail_after_ = successes; }
  void Disarm() { fail_after_ = -1; }
  // Items returned by ScanItems so far: what a sync read in bulk.
  size_t items_scanned() const { return items_scanned_; }

  const ReplicaState& state() const override { return base_->state(); }
  Result<std::optional<ItemMetadata>> GetItem(const ItemId& id) override {
    return base_->GetItem(id);
  }
  Result<std::optional<ItemMetadata>> FindByKey(std::string_view key) override {
    return base_->FindByKey(key);
  }
  Status ScanItems(const ItemId& first, const ItemId& last, size_t limit,
                   std::vector<ItemMetadata>& out) override {
    size_t before = out.size();
    Status status = base_->ScanItems(first, last, limit, out);
    items_scanned_ += out.size() - before;
    return status;
  }
  Result<size_t> CountItems() override { return base_->CountItems(); }
  Result<std::vector<ConflictRecord>> ListConflicts() override { return base_->ListConflicts(); }
  Status Commit(const StoreBatch& batch) override {
    if (fail_after_ == 0) {
      fail_after_ = -1;
      return AbortedError("injected crash before the metadata commit");
    }
    if (fail_after_ > 0) --fail_after_;
    return base_->Commit(batch);
  }

 private:
  std::unique_ptr<MetadataStore> base_;
  int fail_after_ = -1;
  size_t items_scanned_ = 0;
};

}  // namespace meshsync::testing

#endif  // MESHSYNC_TESTING_FAULT_STORE_H_
