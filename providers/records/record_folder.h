// RecordFolderProvider: a folder of items, one text file per record, as a
// replica. It is the plain-file end of record sync: a feed's items, a
// table's rows or any other record store's items appear as files a person
// can read, edit, add and delete with any editor, and those edits sync back.
//
// A record file holds the record's fields (include/meshsync/record.h), one
// per line, in the order they were first written:
//
//   title: Buy milk
//   content: two litres
//    and bread
//   {http://example.com/ns}tag: shopping
//
// A field is NAME ": " VALUE, or NAME ":" for an empty value. A name may
// start with a "{...}" part that holds anything but "}" and a newline (a
// namespace, as feed fields have); after it, a name holds no ": ", no
// newline, and does not start with a space. A line that starts with one
// space continues the value above it: the value gets a newline and the rest
// of the line. So every value (any bytes; a newline is a line break) is
// kept byte for byte, and a file the provider wrote is read back exactly.
// Empty lines between fields are ignored.
//
// Items:
//   key    the file name
//   units  one per field, ChangeUnitIdFromName(name), so concurrent edits
//          of different fields of a record merge and edits of one conflict
//   id     a record that arrives from another replica is written as
//          ID.txt (its item id in hex), and a file of that name is that
//          item again, so a file written just before a crash (its metadata
//          not yet committed) is recognised rather than duplicated
//   state  the file's size, mtime and inode, and the hash of each field:
//          an unchanged file is not read again
//
// Files are records if they are regular files directly in the folder whose
// names do not start with "." and do not end with "~" (editors' backups);
// other entries (subfolders, links, .meshsync/) are not part of the replica.
// A file that is not a valid record is left alone, is not taken for a
// deletion, and is listed in problems() after DetectChanges.
//
// Writes are atomic (meshsync/atomic_file.h) and durable when SaveChange
// returns. A file that changed since it was detected is not overwritten or
// deleted (kUnavailable; the next session picks the edit up). Deleted
// records go to .meshsync/trash/. Renaming a file by hand is a delete and a
// create.
//
// Built against the public headers only. Thread-compatible.
#ifndef MESHSYNC_PROVIDERS_RECORDS_RECORD_FOLDER_H_
#define MESHSYNC_PROVIDERS_RECORDS_RECORD_FOLDER_H_

#include <string>
#include <utility>
#include <vector>

#include "meshsync/provider.h"

namespace meshsync {

// A record's fields in file order.
using RecordFields = std::vector<std::pair<std::string, std::string>>;

// The fields of record file `text`. kInvalidArgument, naming the line, for a
// line that is not a field or a field named twice.
Result<RecordFields> ParseRecordFile(std::string_view text);
// The record file of `fields`. kInvalidArgument for a name that the format
// cannot carry (see above).
Result<std::string> FormatRecordFile(const RecordFields& fields);

class RecordFolderProvider final : public Provider {
 public:
  static constexpr std::string_view kName = "record-folder";

  // `dir` must exist.
  explicit RecordFolderProvider(std::string dir);

  // The files DetectChanges could not read as records: "NAME: reason".
  const std::vector<std::string>& problems() const { return problems_; }

  // ---- Provider ----
  std::string_view Name() const override { return kName; }
  Status DetectChanges(ChangeRecorder& recorder) override;
  Status LoadChangeData(const ItemMetadata& item, std::span<const ChangeUnitId> units,
                        std::vector<UnitData>& out) override;
  Result<SaveResult> SaveChange(const SaveRequest& request) override;

 private:
  std::string PathOf(std::string_view name) const { return dir_ + "/" + std::string(name); }

  const std::string dir_;
  std::vector<std::string> problems_;
};

}  // namespace meshsync

#endif  // MESHSYNC_PROVIDERS_RECORDS_RECORD_FOLDER_H_
