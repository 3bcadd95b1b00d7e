"""A local GCS for the tests: gcp-storage-emulator on 127.0.0.1, taught the
generation preconditions that tensorstore (Orbax's gs:// writer) relies on,
with a log of the requests it served."""

import logging
import sys
import urllib.parse


class Emulator:
  """gcp-storage-emulator, in memory, serving gs://BUCKET/ on `url`, with the
  request lines it logs (e.g. 'POST /upload/storage/v1/b/tfx/o?...')."""

  def __init__(self, url: str, bucket: str):
    from gcp_storage_emulator.server import create_server  # pylint: disable=g-import-not-at-top
    _add_generations_to_emulator()
    self.requests = []
    self._server = create_server('127.0.0.1', int(url.rsplit(':', 1)[1]),
                                 in_memory=True, default_bucket=bucket)
    self._logger = logging.getLogger('gcp_storage_emulator.server')
    self._handler = _RequestLog(self.requests)
    self._logger.addHandler(self._handler)
    self._logger.setLevel(logging.INFO)
    self._logger.propagate = False
    self._server.start()
    httpd = getattr(getattr(self._server, '_api', None), '_httpd', None)
    if httpd:  # gcsfs drops the slower of two probes it sends at once: no traceback.
      default = httpd.handle_error
      httpd.handle_error = lambda *args: (
          None if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError))
          else default(*args))

  def writes(self, since: int = 0, containing: str = '') -> list[str]:
    """Requests from index `since` that write or delete an object: one per
    object written (a resumable upload's later requests, with upload_id=,
    carry the same object) and one per delete."""
    return [r for r in self.requests[since:]
            if r.split(' ', 1)[0] in ('POST', 'PUT', 'PATCH', 'DELETE')
            and 'upload_id=' not in r and containing in r]

  def stop(self):
    self._server.stop()
    self._logger.removeHandler(self._handler)


def _add_generations_to_emulator():
  """Teach gcp-storage-emulator two GCS behaviours that it lacks and that
  tensorstore (Orbax's gs:// writer) relies on, as GCS documents them and
  tensorstore's own GCS mock implements them:
  - the preconditions ifGenerationMatch / ifGenerationNotMatch on object
    reads (412 / 304 Not Modified) and uploads (412), and
  - the x-goog-generation header of a media download.
  Without them, tensorstore's conditional re-read of an OCDBT manifest gets
  the body with no generation, and the next write of that checkpoint fails
  with 'Malformed StorageGeneration' (at random, as caching decides).
  """
  from http import HTTPStatus  # pylint: disable=g-import-not-at-top

  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.exceptions import NotFound  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top
  if getattr(objects, 'with_generations', False):
    return

  def generation(request, storage, name):
    try:
      return int(storage.get_file_obj(request.params['bucket_name'], name)['generation'])
    except NotFound:
      return None

  def failed(request, storage, name, *, read):
    """The status of a failed precondition, else None."""
    live = generation(request, storage, name)
    match = request.query.get('ifGenerationMatch')
    if match and int(match[0]) != (live or 0):  # 0: "no live object".
      return HTTPStatus.PRECONDITION_FAILED
    not_match = request.query.get('ifGenerationNotMatch')
    if not_match and live is not None and int(not_match[0]) == live:
      return HTTPStatus.NOT_MODIFIED if read else HTTPStatus.PRECONDITION_FAILED
    return None

  def wrap_read(handler):
    def read(request, response, storage, *args, **kwargs):
      name = request.params['object_id']
      status = failed(request, storage, name, read=True)
      if status:
        response.status = status
        return None
      out = handler(request, response, storage, *args, **kwargs)
      live = generation(request, storage, name)
      if live is not None and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        response['x-goog-generation'] = str(live)
      return out
    return read

  def wrap_insert(handler):
    def insert(request, response, storage, *args, **kwargs):
      name = request.query.get('name')
      status = name and failed(request, storage, name[0], read=False)
      if status:
        response.status = status
        return None
      return handler(request, response, storage, *args, **kwargs)
    return insert

  wrapped = {objects.get: wrap_read(objects.get), objects.download: wrap_read(objects.download),
             objects.insert: wrap_insert(objects.insert)}
  for _, methods in server.HANDLERS:
    for method, handler in methods.items():
      methods[method] = wrapped.get(handler, handler)
  objects.download = wrapped[objects.download]  # get() calls it for alt=media.
  objects.insert = wrapped[objects.insert]  # The router's fallback for uploads.
  objects.with_generations = True


class _RequestLog(logging.Handler):
  def __init__(self, requests):
    super().__init__()
    self._requests = requests

  def emit(self, record):
    message = record.getMessage()  # '"POST /path?query HTTP/1.1" 200 -'
    if message.startswith('"'):
      self._requests.append(urllib.parse.unquote(message[1:].split(' HTTP/', 1)[0]))
