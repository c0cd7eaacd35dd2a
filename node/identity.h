// Device identity: a node's key pair and self-signed certificate, and the
// device id derived from its public key.
//
// A device id is the SHA-256 of the certificate's public key (its DER
// SubjectPublicKeyInfo), so a certificate can be renewed without changing
// the id. It prints as 56 characters of base32 in eight groups of seven,
// e.g. "MFZWI3D-BONSGYC-...": four blocks of 13 characters, each followed
// by a check character, so a mistyped id is caught when it is entered
// rather than when a connection is refused.
#ifndef MESHSYNC_NODE_IDENTITY_H_
#define MESHSYNC_NODE_IDENTITY_H_

#include <array>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "meshsync/status.h"

typedef struct x509_st X509;

namespace meshsync::node {

struct DeviceId {
  std::array<uint8_t, 32> bytes{};

  // Accepts the printed form in any case, with or without dashes and
  // spaces; a wrong length, letter or check character is kInvalidArgument.
  static Result<DeviceId> Parse(std::string_view text);
  // The id of the public key in `cert`.
  static Result<DeviceId> OfCertificate(X509* cert);

  std::string ToString() const;
  std::string ShortName() const;  // the first group: for logs and file names
  bool IsZero() const;
  friend auto operator<=>(const DeviceId&, const DeviceId&) = default;
};

// The files of a node's home directory that make up its identity.
struct Identity {
  DeviceId id;
  std::string cert_path;  // PEM, self-signed
  std::string key_path;   // PEM, readable by the owner only

  // Loads the identity in `home`, creating the directory, an Ed25519 key
  // and a certificate for it on first use.
  static Result<Identity> LoadOrCreate(const std::string& home);

  // The node's Ed25519 signature of `message`.
  Result<std::string> Sign(std::string_view message) const;
  // The certificate, DER-encoded.
  Result<std::string> CertificateDer() const;
};

// Checks that `signature` is the signature of `message` by the key of the
// certificate `cert_der`, and returns that key's device id.
// kDataLoss for a signature that does not match, kInvalidArgument for a bad
// certificate.
Result<DeviceId> VerifySignature(std::string_view cert_der, std::string_view message,
                                 std::string_view signature);

}  // namespace meshsync::node

#endif  // MESHSYNC_NODE_IDENTITY_H_
