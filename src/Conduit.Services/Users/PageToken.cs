using System.Buffers.Binary;
using System.Buffers.Text;

namespace Conduit.Services.Users;

/// <summary>
/// The ListUsers page token: opaque to clients; inside, a version byte and the id of the last
/// user sent (keyset pagination), base64url. The next page starts right after that id.
/// </summary>
public static class PageToken
{
    public const string TrailerName = "next-page-token";
    private const byte Version = 1;

    public static string Encode(long lastId)
    {
        Span<byte> bytes = stackalloc byte[9];
        bytes[0] = Version;
        BinaryPrimitives.WriteInt64BigEndian(bytes[1..], lastId);
        return Base64Url.EncodeToString(bytes);
    }

    public static bool TryDecode(string token, out long lastId)
    {
        lastId = 0;
        Span<byte> bytes = stackalloc byte[12];
        if (token.Length > 16 || !Base64Url.TryDecodeFromChars(token, bytes, out var written) || written != 9 || bytes[0] != Version) return false;
        lastId = BinaryPrimitives.ReadInt64BigEndian(bytes[1..9]);
        return lastId >= 0;
    }
}
