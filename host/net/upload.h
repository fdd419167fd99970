/* upload.h: a multipart/form-data request body as it arrives: file parts into private temp
 * files in the runtime folder, other fields into a JSON object (ctx->files, ctx->body). Owns
 * those files until the function returned. */
#ifndef WSHOST_UPLOAD_H
#define WSHOST_UPLOAD_H

#include "host.h"

struct upload;

/* For a request whose Content-Type is multipart/form-data with this boundary. NULL: out of
 * memory, or no runtime folder. Its parser's memory counts in h->http_body_bytes. */
struct upload *upload_new(struct host *h, const char *boundary);
/* Body bytes. 0, or -1 with the reason (malformed: 400) in err; -2: the host's memory bound
 * (--max-body-total: 503); -3: a temp file could not be written (500). */
int upload_feed(struct upload *u, const char *p, size_t n, char *err, size_t errlen);
/* The body is complete: 0, or -1 with the reason (400). */
int upload_finish(struct upload *u, char *err, size_t errlen);
/* The fields (borrowed) and the files. */
json_t *upload_fields(struct upload *u);
const cloud_file *upload_files(struct upload *u, size_t *count);
/* Removes the temp files (the function returned); idempotent. */
void upload_remove(struct upload *u);
/* Removes the files and frees everything. */
void upload_free(struct upload *u);

#endif
