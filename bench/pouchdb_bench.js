// PouchDB replication of the same table as db_sync_bench: ROWS documents
// with the same five fields, replicated from one in-memory database to
// another (the memory adapter: no disk, PouchDB's best case), then the same
// 1,000-change incremental set. Prints key=value lines.
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-replication'));

const rows = parseInt(process.argv[2] || '100000', 10);
const hex = (n) => require('crypto').randomBytes(n).toString('hex');

(async () => {
  const src = new PouchDB('src', {adapter: 'memory'});
  const dst = new PouchDB('dst', {adapter: 'memory'});
  for (let start = 1; start <= rows; start += 5000) {
    const docs = [];
    for (let i = start; i < start + 5000 && i <= rows; ++i) {
      docs.push({_id: String(i).padStart(8, '0'), name: 'customer ' + i, qty: i % 977,
                 price: (i % 10007) * 0.25, note: 'note for row ' + i + ' ' + hex(8),
                 data: hex(24 + i % 16)});
    }
    await src.bulkDocs(docs);
  }
  let t = process.hrtime.bigint();
  await PouchDB.replicate(src, dst, {batch_size: 1000});
  const initial = Number(process.hrtime.bigint() - t) / 1e9;
  // 800 updates of two fields, 100 inserts, 100 deletes.
  const changed = [];
  for (let i = 125; i <= rows; i += 125) {
    const doc = await src.get(String(i).padStart(8, '0'));
    doc.name += '+'; doc.qty += 1; changed.push(doc);
  }
  for (let i = 1; i <= 100; ++i) {
    changed.push({_id: String(rows + i).padStart(8, '0'), name: 'new ' + i, qty: i,
                  price: i * 0.5, note: 'fresh', data: hex(32)});
  }
  for (let i = 7; i <= rows; i += 1000) {
    const doc = await src.get(String(i).padStart(8, '0'));
    changed.push({_id: doc._id, _rev: doc._rev, _deleted: true});
  }
  await src.bulkDocs(changed);
  t = process.hrtime.bigint();
  await PouchDB.replicate(src, dst, {batch_size: 1000});
  const incremental = Number(process.hrtime.bigint() - t) / 1e9;
  const info = await dst.info();
  if (info.doc_count !== rows) throw new Error('replicated ' + info.doc_count + ' documents');
  console.log('pouch_initial=' + initial.toFixed(4));
  console.log('pouch_incremental=' + incremental.toFixed(4));
})().catch((e) => { console.error(e); process.exit(1); });
